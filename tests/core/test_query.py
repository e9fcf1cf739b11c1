"""The search language parser: text to AST, every error's message, and a stable printer."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipetrail.core.query import (
    And,
    Compare,
    Condition,
    Field,
    FieldKind,
    In,
    Not,
    Or,
    OrderKey,
    QuerySyntaxError,
    Value,
    parse_filter,
    parse_order_by,
    parse_time,
    to_text,
)
from pipetrail.core.query_parser import MAX_DEPTH
from pipetrail.core.status import RunStatus
from pipetrail.errors import UsageError

K = FieldKind
LR = Field(K.PARAM, "lr")
ACC = Field(K.METRIC, "acc")


def cmp(field: Field, op: str, value: Value) -> Compare:
    return Compare(field, op, value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # fields
        ("params.lr > 0.01", cmp(LR, ">", 0.01)),
        ("params.optimizer.lr = 1", cmp(Field(K.PARAM, "optimizer.lr"), "=", 1)),
        ("params.layers.0 = 64", cmp(Field(K.PARAM, "layers.0"), "=", 64)),
        ("params.`my key` = 'x'", cmp(Field(K.PARAM, "my key"), "=", "x")),
        ("params.opt.`a b`.c = 1", cmp(Field(K.PARAM, "opt.a b.c"), "=", 1)),
        ("params.`a\\`b` = 1", cmp(Field(K.PARAM, "a`b"), "=", 1)),
        ("params.a-b/c_d = 1", cmp(Field(K.PARAM, "a-b/c_d"), "=", 1)),
        ("metrics.val/loss < 0.3", cmp(Field(K.METRIC, "val/loss"), "<", 0.3)),
        ("min(metrics.loss) <= 1", cmp(Field(K.METRIC_MIN, "loss"), "<=", 1)),
        ("MAX( metrics.acc ) >= 1", cmp(Field(K.METRIC_MAX, "acc"), ">=", 1)),
        ("tags.phase = 'experiment'", cmp(Field(K.TAG_VALUE, "phase"), "=", "experiment")),
        ("tag = 'joined'", cmp(Field(K.TAG), "=", "joined")),
        ("status = 'completed'", cmp(Field(K.STATUS), "=", "completed")),
        ("pipeline = 'iris'", cmp(Field(K.PIPELINE), "=", "iris")),
        ("user = 'ana'", cmp(Field(K.USER), "=", "ana")),
        ("created >= '2024-05-01'", cmp(Field(K.CREATED), ">=", "2024-05-01")),
        ("finished = null", cmp(Field(K.FINISHED), "=", None)),
        ("duration > 60", cmp(Field(K.DURATION), ">", 60)),
        ("STATUS = 'failed'", cmp(Field(K.STATUS), "=", "failed")),
        ("Params.Lr = 1", cmp(Field(K.PARAM, "Lr"), "=", 1)),
        # operators
        ("params.lr != 1", cmp(LR, "!=", 1)),
        ("params.lr <> 1", cmp(LR, "!=", 1)),
        ("params.lr == 1", cmp(LR, "=", 1)),
        ("params.lr<1", cmp(LR, "<", 1)),
        ("params.lr>=-1", cmp(LR, ">=", -1)),
        ("params.n like 'a%'", cmp(Field(K.PARAM, "n"), "like", "a%")),
        ("params.n NOT LIKE 'a_'", cmp(Field(K.PARAM, "n"), "not like", "a_")),
        ("params.n ~ '^a'", cmp(Field(K.PARAM, "n"), "~", "^a")),
        ("params.n matches '^a'", cmp(Field(K.PARAM, "n"), "~", "^a")),
        ("params.n !~ '^a'", cmp(Field(K.PARAM, "n"), "!~", "^a")),
        ("params.n not matches '^a'", cmp(Field(K.PARAM, "n"), "!~", "^a")),
        ("params.lr in (1, 'x', true)", In(LR, (1, "x", True))),
        ("params.lr not in (1)", In(LR, (1,), negated=True)),
        ("status IN ('failed','cancelled')", In(Field(K.STATUS), ("failed", "cancelled"))),
        # literals
        ("params.lr = 1e-3", cmp(LR, "=", 0.001)),
        ("params.lr = -2.5E+2", cmp(LR, "=", -250.0)),
        ("params.lr = .5", cmp(LR, "=", 0.5)),
        ("params.lr = 3.", cmp(LR, "=", 3.0)),
        ("params.lr = 007", cmp(LR, "=", 7)),
        ('params.lr = "it\'s"', cmp(LR, "=", "it's")),
        ("params.lr = 'it\\'s'", cmp(LR, "=", "it's")),
        ("params.lr = 'a\\\\b'", cmp(LR, "=", "a\\b")),
        ("params.lr = 'tab\\tnew\\nline'", cmp(LR, "=", "tab\tnew\nline")),
        ("params.lr ~ '\\d+'", cmp(LR, "~", "\\d+")),  # unknown escapes are kept
        ("params.lr = ''", cmp(LR, "=", "")),
        ("params.lr = TRUE", cmp(LR, "=", True)),
        ("params.lr = false", cmp(LR, "=", False)),
        ("params.lr = Null", cmp(LR, "=", None)),
        ("params.lr = 'é ✓'", cmp(LR, "=", "é ✓")),
        # combinations and precedence
        (
            "params.lr = 1 and metrics.acc > 0.9",
            And((cmp(LR, "=", 1), cmp(ACC, ">", 0.9))),
        ),
        (
            "params.lr = 1 or params.lr = 2 and metrics.acc > 0.9",
            Or((cmp(LR, "=", 1), And((cmp(LR, "=", 2), cmp(ACC, ">", 0.9))))),
        ),
        (
            "(params.lr = 1 or params.lr = 2) and metrics.acc > 0.9",
            And((Or((cmp(LR, "=", 1), cmp(LR, "=", 2))), cmp(ACC, ">", 0.9))),
        ),
        (
            "not params.lr = 1 and metrics.acc > 0.9",
            And((Not(cmp(LR, "=", 1)), cmp(ACC, ">", 0.9))),
        ),
        (
            "not (params.lr = 1 and metrics.acc > 0.9)",
            Not(And((cmp(LR, "=", 1), cmp(ACC, ">", 0.9)))),
        ),
        ("NOT not params.lr = 1", Not(Not(cmp(LR, "=", 1)))),
        ("((params.lr = 1))", cmp(LR, "=", 1)),
        (
            "params.lr = 1 AND params.lr = 2 And params.lr = 3",
            And((cmp(LR, "=", 1), cmp(LR, "=", 2), cmp(LR, "=", 3))),
        ),
        # names that look like keywords are still names after a prefix
        ("params.and = 1", cmp(Field(K.PARAM, "and"), "=", 1)),
        ("metrics.in > 1", cmp(Field(K.METRIC, "in"), ">", 1)),
        ("\n params.lr\t=\n1 ", cmp(LR, "=", 1)),
    ],
)
def test_parse_filter(text: str, expected: Condition) -> None:
    assert parse_filter(text) == expected


def _err(text: str) -> str:
    with pytest.raises(QuerySyntaxError) as caught:
        parse_filter(text)
    return str(caught.value)


@pytest.mark.parametrize(
    ("text", "reason", "offset"),
    [
        ("", "the filter is empty", 0),
        ("   ", "the filter is empty", 3),
        ("metrics.acc >  and x", "expected a value after '>'", 15),
        ("metrics.acc >", "expected a value after '>'", 13),
        ("status = completed", "expected a value after '=' (put text in quotes: 'completed')", 9),
        ("metrics.acc", "expected an operator after 'metrics.acc'", 11),
        ("metrics.acc is 1", "expected an operator after 'metrics.acc'", 12),
        ("params.x not = 1", "expected in, like or matches after 'not'", 13),
        ("param.lr = 1", "unknown field 'param.lr'; did you mean 'params.lr'?", 0),
        ("metric.acc > 1", "did you mean 'metrics.acc'?", 0),
        ("foo = 1", "unknown field 'foo' (fields: params.<name>, metrics.<name>", 0),
        ("status.x = 'a'", "unknown field 'status.x'", 0),
        ("`params`.x = 1", "unexpected character '`'", 0),
        ("p`arams`.x = 1", "unknown field 'p`arams`.x'", 0),
        ("params = 1", "expected a parameter name after 'params.'", 6),
        ("params. = 1", "expected a parameter name after 'params.'", 7),
        ("metrics > 1", "expected a metric name after 'metrics.'", 7),
        ("tags = 'a'", "expected a tag key name after 'tags.'", 4),
        ("min(params.x) > 1", "min(…) takes a metric, like min(metrics.loss)", 4),
        ("max() > 1", "max(…) takes a metric", 4),
        ("min(metrics.x > 1", "expected ')' after 'min(metrics.x'", 14),
        ("min = 1", "unknown field 'min'", 0),
        ("(params.lr = 1", "expected ')' to close the '(' at position 1", 14),
        ("((params.lr = 1)", "expected ')' to close the '(' at position 1", 16),
        ("params.lr = 1)", "unbalanced ')': there is no '(' before it", 13),
        ("params.lr = 1 params.x = 2", "unexpected 'params.x' after a complete condition", 14),
        ("params.lr = 1 'x'", "unexpected \"'x'\" after a complete condition", 14),
        ("()", "expected a condition after '('", 1),
        ("params.lr = 1 and", "expected a condition after 'and'", 17),
        ("params.lr = 1 or or", "expected a condition after 'or'", 17),
        ("not", "expected a condition after 'not'", 3),
        ("> 1", "expected a condition", 0),
        ("0.9 < metrics.acc", "expected a field, not the value 0.9", 0),
        ("params.lr = 1 and 'x' = 1", "expected a field after 'and', not the value 'x'", 18),
        ("params.lr in ()", "in () needs at least one value", 14),
        ("params.lr in 1", "expected '(' after 'in'", 13),
        ("params.lr in (1 2)", "expected ',' or ')' after 1 in the list of 'in'", 16),
        ("params.lr in (1,)", "expected a value after ','", 16),
        ("params.lr in (1", "expected ',' or ')' after 1", 15),
        ("params.lr in (null)", "null cannot be one of the values of in (…)", 14),
        ("params.x ~ 'a('", "invalid regular expression 'a(': missing ): a(", 11),
        ("params.x ~ '(a)\\1'", "invalid escape sequence: \\1 (patterns are RE2", 11),
        ("tag ~ 'a(?=b)'", "invalid regular expression 'a(?=b)': invalid perl operator", 6),
        ("tag !~ '(?<!x)y'", "invalid perl operator: (?<! (patterns are RE2: no backref", 7),
        ("params.x matches '[z-a]'", "invalid regular expression '[z-a]'", 17),
        ("params.x like 1", "like takes a pattern in quotes, not 1", 14),
        ("params.x like 'a\\\\'", "a like pattern cannot end with a lone backslash", 14),
        ("params.x = 'open", "unterminated text: no closing quote", 11),
        ("params.`open = 1", "unterminated name: no closing backquote", 7),
        ("params.x = 1 # comment", "unexpected character '#'", 13),
        ("params.x = -", "unexpected character '-'", 11),
        ("params.x = 1e999", "number 1e999 is too large", 11),
        (f"params.x = {10**19}", f"number {10**19} is too large; integers go up to", 11),
        (f"params.x > -{10**19}", f"number -{10**19} is too large", 11),
        ("created < '9999-12-31'", "created: time '9999-12-31T00:00:00+00:00' is out of range", 10),
        ("finished > '0001-01-01T00:00+05:00'", "'0001-01-01T00:00+05:00' is not a time", 11),
        ("created >= '1899-12-31'", "is out of range; give a time from 1900-01-01 to", 11),
        ("params.x < null", "null can only be compared with = or !=, not <", 11),
        ("params.x like null", "null can only be compared with = or !=, not like", 14),
        ("params.x > true", "true and false can only be compared with = or !=, not >", 11),
        ("metrics.acc = 'x'", "metrics.acc is a number; compare it with a number", 14),
        ("metrics.acc = true", "metrics.acc is a number", 14),
        ("duration in (1, 'x')", "duration is a number", 16),
        ("metrics.acc like 'a%'", "like works on text, and metrics.acc is a number", 17),
        ("created ~ '2024'", "~ works on text, and created is a time", 10),
        ("created > 1", "created is a time; give an ISO date or time in quotes", 10),
        ("finished > 'yesterday'", "'yesterday' is not a time; give an ISO date or time", 11),
        ("tags.phase = 3", "tags.phase is text; put the value in quotes: '3'", 13),
        ("status = 'complete'", "unknown status 'complete' (statuses: initial, running,", 9),
        ("status in ('failed', 'lost')", "unknown status 'lost'", 21),
        ("user = true", "user is text; put the value in quotes: 'true'", 7),
        ("é = 1", "unexpected character 'é'", 0),
    ],
)
def test_errors_point_at_the_token(text: str, reason: str, offset: int) -> None:
    with pytest.raises(QuerySyntaxError) as caught:
        parse_filter(text)
    error = caught.value
    assert reason in error.reason
    assert error.offset == offset, str(error)
    assert (error.source, error.text) == ("filter", text)
    flat = text.replace("\n", " ").replace("\t", " ")
    assert str(error) == (
        f"filter: {error.reason} at position {offset + 1}:\n  {flat}\n  {' ' * offset}^"
    )


def test_deep_nesting_is_refused_at_the_first_level_too_many() -> None:
    text = "(" * 250 + "status = 'failed'" + ")" * 250
    assert len(text) < 2000  # under the API's length cap, once a RecursionError
    with pytest.raises(QuerySyntaxError) as caught:
        parse_filter(text)
    assert caught.value.offset == MAX_DEPTH
    assert f"more than {MAX_DEPTH} levels deep" in caught.value.reason
    nots = "not " * 300 + "status = 'failed'"
    with pytest.raises(QuerySyntaxError) as caught:
        parse_filter(nots)
    assert caught.value.offset == 4 * MAX_DEPTH


def test_nesting_up_to_the_limit_parses() -> None:
    inner = "status = 'failed'"
    deepest = "(" * MAX_DEPTH + inner + ")" * MAX_DEPTH
    assert parse_filter(deepest) == parse_filter(inner)
    mixed = "not (" * (MAX_DEPTH // 2) + inner + ")" * (MAX_DEPTH // 2)
    assert to_text(parse_filter(mixed)).count("not") == MAX_DEPTH // 2


def test_error_message_shape() -> None:
    assert _err("metrics.acc >  and x") == (
        "filter: expected a value after '>' at position 16:\n"
        "  metrics.acc >  and x\n"
        "                 ^"
    )
    assert issubclass(QuerySyntaxError, UsageError)


def test_error_excerpt_keeps_columns_for_multiline_filters() -> None:
    message = _err("params.lr = 1 and\n\tmetrics.acc >")
    assert message.splitlines()[1:] == ["  params.lr = 1 and  metrics.acc >", " " * 34 + "^"]


@pytest.mark.parametrize(
    ("items", "expected"),
    [
        ((), ()),
        (("metrics.accuracy desc",), (OrderKey(Field(K.METRIC, "accuracy"), True),)),
        (("created",), (OrderKey(Field(K.CREATED)),)),
        (("params.lr ASC",), (OrderKey(LR),)),
        (
            ("created, user desc", "min(metrics.loss)"),
            (
                OrderKey(Field(K.CREATED)),
                OrderKey(Field(K.USER), True),
                OrderKey(Field(K.METRIC_MIN, "loss")),
            ),
        ),
        (("tags.phase desc",), (OrderKey(Field(K.TAG_VALUE, "phase"), True),)),
        (("params.`my key` desc",), (OrderKey(Field(K.PARAM, "my key"), True),)),
    ],
)
def test_parse_order_by(items: tuple[str, ...], expected: tuple[OrderKey, ...]) -> None:
    assert parse_order_by(items) == expected


@pytest.mark.parametrize(
    ("item", "reason", "offset"),
    [
        ("", "the order_by item is empty", 0),
        ("metrics.acc up", "expected asc, desc or ',' after 'metrics.acc'", 12),
        ("metrics.acc desc desc", "expected asc, desc or ','", 17),
        ("metrics.acc,", "expected a field", 12),
        ("desc", "expected a field", 0),
        ("acc desc", "unknown field 'acc'", 0),
        ("params desc", "expected a parameter name after 'params.'", 6),
    ],
)
def test_order_by_errors(item: str, reason: str, offset: int) -> None:
    with pytest.raises(QuerySyntaxError) as caught:
        parse_order_by(["created", item])
    assert reason in caught.value.reason
    assert caught.value.offset == offset
    assert str(caught.value).startswith(f"order_by: {caught.value.reason} at position")


def test_parse_time() -> None:
    with pytest.raises(ValueError, match="outside the range of times"):
        parse_time("0001-01-01T00:00:00+05:00")
    assert parse_time("2024-05-01") == datetime(2024, 5, 1, tzinfo=UTC)
    assert parse_time("2024-05-01T12:30:00Z") == datetime(2024, 5, 1, 12, 30, tzinfo=UTC)
    assert parse_time("2024-05-01 14:30+02:00") == datetime(2024, 5, 1, 12, 30, tzinfo=UTC)
    assert parse_time("2024-05-01T12:30:00").tzinfo is UTC
    with pytest.raises(ValueError):
        parse_time("-2d")


def test_printer_examples() -> None:
    text = (
        "not (params.`my key` = 'it\\'s' or tag = 'a\\\\b') and min(metrics.val/loss) < 0.001 "
        "and status not in ('failed', 'cancelled') and finished != null and params.f = true"
    )
    assert to_text(parse_filter(text)) == text
    assert str(OrderKey(Field(K.METRIC_MAX, "a b"), True)) == "max(metrics.`a b`) desc"
    assert to_text(parse_filter("params.x=1 AND(params.y=2)")) == "params.x = 1 and params.y = 2"


# -- round trip ---------------------------------------------------------------------------------

_names = st.text(min_size=1, max_size=12)
_texts = st.text(max_size=12)
_numbers = st.one_of(
    st.integers(min_value=-(10**12), max_value=10**12),
    st.floats(allow_nan=False, allow_infinity=False, width=64),
)
_times = st.datetimes(
    min_value=datetime(1970, 1, 2), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
).map(lambda d: d.astimezone(timezone(timedelta(hours=2))).isoformat())
_patterns = _texts.map(lambda s: s.replace("\\", "")) | st.just("50\\%")
_regexes = st.sampled_from(["^a", "b$", "[0-9]+", "(x|y)", "\\d{2,3}", ".*"])
_statuses = st.sampled_from([s.value for s in RunStatus])


def _field_values(kind: FieldKind) -> st.SearchStrategy[Value]:
    if kind in (K.METRIC, K.METRIC_MIN, K.METRIC_MAX, K.DURATION):
        return _numbers
    if kind in (K.CREATED, K.FINISHED):
        return _times
    if kind is K.STATUS:
        return _statuses
    if kind is K.PARAM:
        return st.one_of(_numbers, _texts, st.booleans())
    return _texts


@st.composite
def _fields(draw: st.DrawFn) -> Field:
    kind = draw(st.sampled_from(list(FieldKind)))
    named = kind in (K.PARAM, K.METRIC, K.METRIC_MIN, K.METRIC_MAX, K.TAG_VALUE)
    return Field(kind, draw(_names) if named else "")


@st.composite
def _predicates(draw: st.DrawFn) -> Condition:
    field = draw(_fields())
    kind = field.kind
    values = _field_values(kind)
    shape = draw(st.sampled_from(["cmp", "null", "in", "like", "regex"]))
    if shape == "in":
        items = tuple(draw(st.lists(values, min_size=1, max_size=3)))
        return In(field, items, draw(st.booleans()))
    if shape == "null":
        return Compare(field, draw(st.sampled_from(["=", "!="])), None)
    text_field = kind in (K.PARAM, K.TAG, K.TAG_VALUE, K.PIPELINE, K.USER, K.STATUS)
    if shape == "like" and text_field:
        return Compare(field, draw(st.sampled_from(["like", "not like"])), draw(_patterns))
    if shape == "regex" and text_field:
        return Compare(field, draw(st.sampled_from(["~", "!~"])), draw(_regexes))
    value = draw(values)
    ops = ["=", "!="]
    if not isinstance(value, bool) and kind is not K.STATUS:
        ops += ["<", "<=", ">", ">="]
    return Compare(field, draw(st.sampled_from(ops)), value)


_conditions = st.recursive(
    _predicates(),
    lambda inner: st.one_of(
        inner.map(Not),
        st.lists(inner, min_size=2, max_size=3).map(lambda items: And(tuple(items))),
        st.lists(inner, min_size=2, max_size=3).map(lambda items: Or(tuple(items))),
    ),
    max_leaves=8,
)


@given(_conditions)
def test_printing_then_parsing_gives_the_same_ast(node: Condition) -> None:
    text = to_text(node)
    again = parse_filter(text)
    assert again == node
    assert to_text(again) == text


@given(st.lists(st.builds(OrderKey, _fields(), st.booleans()), max_size=4))
def test_order_keys_print_and_parse_back(keys: list[OrderKey]) -> None:
    assert parse_order_by([str(k) for k in keys]) == tuple(keys)
    assert parse_order_by([", ".join(str(k) for k in keys)] if keys else []) == tuple(keys)


@given(st.text(max_size=40))
def test_arbitrary_text_parses_or_raises_query_syntax_error(text: str) -> None:
    try:
        node = parse_filter(text)
    except QuerySyntaxError as exc:
        assert 0 <= exc.offset <= len(text)
    else:
        assert parse_filter(to_text(node)) == node


_SOUP = st.lists(
    st.sampled_from(
        [
            "params.lr",
            "metrics.acc",
            "min(",
            "max",
            "metrics.x",
            ")",
            "(",
            ",",
            "tags.k",
            "tag",
            "status",
            "created",
            "duration",
            "and",
            "or",
            "not",
            "in",
            "like",
            "~",
            "matches",
            "!~",
            "=",
            "!=",
            "<",
            ">=",
            "1",
            "-2.5",
            "'x'",
            "'completed'",
            "'2024-01-01'",
            "true",
            "null",
            "asc",
            "desc",
            "params.`a b`",
            "'('",
            "'a\\\\'",
        ]
    ),
    max_size=12,
).map(" ".join)


@given(_SOUP)
def test_any_token_soup_parses_or_raises_query_syntax_error(text: str) -> None:
    for parse in (parse_filter, lambda t: parse_order_by([t])):
        try:
            parsed = parse(text)
        except QuerySyntaxError as exc:
            assert 0 <= exc.offset <= len(text)
            assert str(exc).endswith("^")
        else:
            if isinstance(parsed, tuple):
                assert parse_order_by([str(k) for k in parsed]) == parsed
            else:
                assert parse_filter(to_text(parsed)) == parsed

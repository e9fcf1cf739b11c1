// Copies the dashboard's browser libraries from node_modules into the Python package.
//
//   npm ci --prefix web && npm run build --prefix web
//
// Idempotent and fast: a file is written only when its bytes differ, files no longer listed
// are removed, and vendor/manifest.json records the exact versions that were copied.
// Nothing is fetched here: `npm ci` installs what package-lock.json pins.

import { createHash } from "node:crypto";
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const modules = join(here, "node_modules");
const vendor = join(here, "..", "src", "pipetrail", "dashboard", "static", "vendor");

// package → { file in the package: name under vendor/ }
const FILES = {
  cytoscape: {
    "dist/cytoscape.min.js": "cytoscape.min.js",
    LICENSE: "LICENSE.cytoscape.txt",
  },
  "cytoscape-dagre": {
    // The UMD build bundles dagre and graphlib (MIT) and registers itself on window.cytoscape.
    "dist/cytoscape-dagre.min.js": "cytoscape-dagre.min.js",
    "dist/cytoscape-dagre.min.js.map": "cytoscape-dagre.min.js.map",
    LICENSE: "LICENSE.cytoscape-dagre.txt",
  },
  // /docs and /redoc (the REST API's pages) load these instead of a CDN.
  "swagger-ui-dist": {
    "swagger-ui-bundle.js": "swagger-ui-bundle.js",
    "swagger-ui.css": "swagger-ui.css",
    LICENSE: "LICENSE.swagger-ui.txt",
  },
  redoc: {
    "bundles/redoc.standalone.js": "redoc.standalone.js",
    LICENSE: "LICENSE.redoc.txt",
  },
  uplot: {
    "dist/uPlot.iife.min.js": "uPlot.iife.min.js",
    "dist/uPlot.min.css": "uPlot.min.css",
    LICENSE: "LICENSE.uplot.txt",
  },
};

function sha256(bytes) {
  return createHash("sha256").update(bytes).digest("hex");
}

function writeIfChanged(target, bytes) {
  if (existsSync(target) && sha256(readFileSync(target)) === sha256(bytes)) return false;
  writeFileSync(target, bytes);
  return true;
}

function main() {
  if (!existsSync(modules)) {
    console.error(`no ${relative(process.cwd(), modules)}: run \`npm ci --prefix web\` first`);
    process.exit(1);
  }
  mkdirSync(vendor, { recursive: true });
  const manifest = { note: "built by web/build.mjs from web/package-lock.json; do not edit", packages: {} };
  const wanted = new Set(["manifest.json"]);
  let changed = 0;
  for (const [pkg, files] of Object.entries(FILES)) {
    const root = join(modules, pkg);
    const meta = JSON.parse(readFileSync(join(root, "package.json"), "utf8"));
    const copied = {};
    for (const [source, name] of Object.entries(files)) {
      const from = join(root, source);
      if (!existsSync(from)) {
        console.error(`${pkg}@${meta.version} has no ${source}; update web/build.mjs`);
        process.exit(1);
      }
      const bytes = readFileSync(from);
      if (writeIfChanged(join(vendor, name), bytes)) changed += 1;
      copied[name] = sha256(bytes);
      wanted.add(name);
    }
    manifest.packages[pkg] = { version: meta.version, license: meta.license, files: copied };
  }
  for (const name of readdirSync(vendor)) {
    if (!wanted.has(name)) {
      rmSync(join(vendor, name), { recursive: true, force: true });
      changed += 1;
    }
  }
  if (writeIfChanged(join(vendor, "manifest.json"), JSON.stringify(manifest, null, 2) + "\n")) changed += 1;
  console.log(`vendor: ${wanted.size} files, ${changed} written or removed (${relative(process.cwd(), vendor)})`);
}

main();

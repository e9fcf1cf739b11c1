"""Storage ports and adapters: the artifact store and the metadata store."""

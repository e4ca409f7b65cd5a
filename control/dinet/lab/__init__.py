"""Link emulation and (later) the Mininet scenario runner."""

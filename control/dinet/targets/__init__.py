"""The only code that writes to a data plane: bcc/XDP programs on Linux hosts, P4Runtime on BMv2."""

"""dinet: computing-aware steering and BIER replication on XDP and BMv2."""

"""Model synchronisation over BIER: UFTP (reliable, encrypted multicast file transfer) carried by the BIER
domain, one BFIR entry set per job (draft-liu-rtgwg-llmsync-multicast)."""

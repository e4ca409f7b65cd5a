/* parse.h: bounded header parsing and checksum helpers shared by the XDP programs (kernel side). */
#ifndef DINET_PARSE_H
#define DINET_PARSE_H

#include <uapi/linux/if_ether.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/ipv6.h>
#include "dinet_consts.h"

/* Per-CPU verdict counters: one slot per DINET_DROP_* / DINET_PASS_* reason. */
static __always_inline void count_verdict(void *map_lookup_result)
{
	__u64 *v = map_lookup_result;
	if (v)
		*v += 1;
}

/* RFC 1071 checksum of an IPv4 header without options (the ones this project builds). */
static __always_inline __u16 ipv4_csum(struct iphdr *iph)
{
	__u32 sum = 0;
	__u16 *w = (__u16 *)iph;
#pragma unroll
	for (int i = 0; i < (int)(sizeof(*iph) / 2); i++)
		sum += w[i];
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return ~sum;
}

#endif /* DINET_PARSE_H */

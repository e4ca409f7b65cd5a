/* xdp_pass.bpf.c: the empty program, XDP_PASS for every packet. The floor of bench/xdp_steer.py, and
 * the program that gives a veth peer the NAPI context XDP_REDIRECT into it needs. */
#include <uapi/linux/bpf.h>

int xdp_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}

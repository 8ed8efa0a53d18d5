/* poll.c — readiness of descriptors whose I/O the caller does itself
 * (OpenSSL, database clients): one IORING_OP_POLL_ADD per wait. */
#include <poll.h>

#include "io.h"
#include "weft/io.h"

int weft_poll(int fd, short events)
{
	if (fd < 0)
		return -EBADF;
	if (!events)
		return -EINVAL;
	WEFT__IO(io_uring_prep_poll_add(sqe, fd, (unsigned)(unsigned short)events));
}

/*
 * sync_trace.c - an LD_PRELOAD shim that logs, in the order they happen,
 * the calls that decide whether an answer was durable when it was sent:
 *
 *   SYNC <path> <size>        an fdatasync() or fsync() of a regular file
 *                             returned 0; <size> is the file's size when the
 *                             call started, so every byte below it is on disk.
 *                             Logged after the call returns.
 *   PWRITE <path> <off> <len> a pwrite() to a regular file returned <len>.
 *                             Logged after the call returns.
 *   SEND <fd> <hex>           bytes about to be written to a socket (write,
 *                             send, sendto, writev, sendmsg; at most 4096
 *                             bytes of each call).  Logged before the call.
 *
 * So a SYNC line before a SEND line means that sync had finished before the
 * send began.  Each line is one write() to a file opened with O_APPEND, so
 * lines of different threads never mix.
 *
 * Environment: SYNC_TRACE_LOG, the log file (required: without it the shim
 * does nothing); SYNC_TRACE_NOOP=1 makes fdatasync() and fsync() return 0
 * without syncing or logging, the defect the log must be able to reveal.
 *
 * Used by tests/integration/test_spool_durability.py, which builds it with cc.
 * Built without sanitizers; under an ASan binary it comes after libasan in
 * LD_PRELOAD, and ASan's interceptors then call into it.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#define SEND_MAX 4096

static int log_fd = -1;
static int noop;

static ssize_t (*real_write)(int, const void *, size_t);
static ssize_t (*real_pwrite)(int, const void *, size_t, off_t);
static ssize_t (*real_pwrite64)(int, const void *, size_t, off_t);
static ssize_t (*real_send)(int, const void *, size_t, int);
static ssize_t (*real_sendto)(int, const void *, size_t, int, const struct sockaddr *,
			      socklen_t);
static ssize_t (*real_writev)(int, const struct iovec *, int);
static ssize_t (*real_sendmsg)(int, const struct msghdr *, int);
static int (*real_fdatasync)(int);
static int (*real_fsync)(int);

__attribute__((constructor)) static void init(void)
{
	const char *path = getenv("SYNC_TRACE_LOG");
	const char *n = getenv("SYNC_TRACE_NOOP");

	real_write = dlsym(RTLD_NEXT, "write");
	real_pwrite = dlsym(RTLD_NEXT, "pwrite");
	real_pwrite64 = dlsym(RTLD_NEXT, "pwrite64");
	real_send = dlsym(RTLD_NEXT, "send");
	real_sendto = dlsym(RTLD_NEXT, "sendto");
	real_writev = dlsym(RTLD_NEXT, "writev");
	real_sendmsg = dlsym(RTLD_NEXT, "sendmsg");
	real_fdatasync = dlsym(RTLD_NEXT, "fdatasync");
	real_fsync = dlsym(RTLD_NEXT, "fsync");
	noop = n && strcmp(n, "1") == 0;
	if (path)
		log_fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
}

static void emit(const char *line, size_t len)
{
	if (log_fd >= 0)
		real_write(log_fd, line, len);
}

static int is_kind(int fd, mode_t kind)
{
	struct stat st;

	return log_fd >= 0 && fd != log_fd && fstat(fd, &st) == 0 && (st.st_mode & S_IFMT) == kind;
}

static void fd_path(int fd, char *out, size_t len)
{
	char link[64];
	ssize_t n;

	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	n = readlink(link, out, len - 1);
	out[n > 0 ? n : 0] = '\0';
}

/* Logs the first SEND_MAX bytes of the iovecs as one SEND line. */
static void log_send(int fd, const struct iovec *iov, int iovcnt)
{
	static const char hex[] = "0123456789abcdef";
	char line[32 + 2 * SEND_MAX];
	size_t n = (size_t)snprintf(line, 32, "SEND %d ", fd);
	size_t left = SEND_MAX;
	int saved = errno;

	for (int i = 0; i < iovcnt && left; i++) {
		const unsigned char *p = iov[i].iov_base;
		size_t k = iov[i].iov_len < left ? iov[i].iov_len : left;

		for (size_t j = 0; j < k; j++) {
			line[n++] = hex[p[j] >> 4];
			line[n++] = hex[p[j] & 15];
		}
		left -= k;
	}
	line[n++] = '\n';
	emit(line, n);
	errno = saved;
}

static void log_pwrite(int fd, off_t off, ssize_t len)
{
	char path[4096], line[4200];
	int saved = errno;
	int n;

	fd_path(fd, path, sizeof(path));
	n = snprintf(line, sizeof(line), "PWRITE %s %lld %zd\n", path, (long long)off, len);
	emit(line, (size_t)n);
	errno = saved;
}

static int traced_sync(int fd, int (*real)(int))
{
	struct stat st;
	char path[4096], line[4200];
	int regular, ret, n, saved;

	if (noop)
		return 0;
	regular = log_fd >= 0 && fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
	ret = real(fd);
	if (ret == 0 && regular) {
		saved = errno;
		fd_path(fd, path, sizeof(path));
		n = snprintf(line, sizeof(line), "SYNC %s %lld\n", path, (long long)st.st_size);
		emit(line, (size_t)n);
		errno = saved;
	}
	return ret;
}

int fdatasync(int fd)
{
	return traced_sync(fd, real_fdatasync);
}

int fsync(int fd)
{
	return traced_sync(fd, real_fsync);
}

ssize_t pwrite(int fd, const void *buf, size_t len, off_t off)
{
	ssize_t r = real_pwrite(fd, buf, len, off);

	if (r > 0 && is_kind(fd, S_IFREG))
		log_pwrite(fd, off, r);
	return r;
}

ssize_t pwrite64(int fd, const void *buf, size_t len, off_t off)
{
	ssize_t r = real_pwrite64(fd, buf, len, off);

	if (r > 0 && is_kind(fd, S_IFREG))
		log_pwrite(fd, off, r);
	return r;
}

ssize_t write(int fd, const void *buf, size_t len)
{
	struct iovec v = { (void *)buf, len };

	if (is_kind(fd, S_IFSOCK))
		log_send(fd, &v, 1);
	return real_write(fd, buf, len);
}

ssize_t send(int fd, const void *buf, size_t len, int flags)
{
	struct iovec v = { (void *)buf, len };

	if (is_kind(fd, S_IFSOCK))
		log_send(fd, &v, 1);
	return real_send(fd, buf, len, flags);
}

ssize_t sendto(int fd, const void *buf, size_t len, int flags, const struct sockaddr *to,
	       socklen_t tolen)
{
	struct iovec v = { (void *)buf, len };

	if (is_kind(fd, S_IFSOCK))
		log_send(fd, &v, 1);
	return real_sendto(fd, buf, len, flags, to, tolen);
}

ssize_t writev(int fd, const struct iovec *iov, int iovcnt)
{
	if (is_kind(fd, S_IFSOCK))
		log_send(fd, iov, iovcnt);
	return real_writev(fd, iov, iovcnt);
}

ssize_t sendmsg(int fd, const struct msghdr *msg, int flags)
{
	if (is_kind(fd, S_IFSOCK))
		log_send(fd, msg->msg_iov, (int)msg->msg_iovlen);
	return real_sendmsg(fd, msg, flags);
}

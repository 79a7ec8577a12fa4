/*
 * LD_PRELOAD shim that turns binds to the wildcard address into binds to loopback.
 *
 * Orthanc 1.10.1 has no option for the address its DICOM and HTTP servers listen on, and
 * binds both to every interface. With this library preloaded, a bind() to INADDR_ANY binds
 * 127.0.0.1 instead and a bind() to in6addr_any binds ::1, so a test peer is never reachable
 * from another host. Every other bind() passes through unchanged.
 *
 * Build: gcc -shared -fPIC -o loopback_bind.so loopback_bind.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

typedef int (*bind_function)(int, const struct sockaddr *, socklen_t);

int bind(int fd, const struct sockaddr *address, socklen_t length)
{
    /* Every thread stores the same pointer, so the unsynchronised lazy lookup is safe. */
    static bind_function libc_bind;
    if (libc_bind == NULL) {
        libc_bind = (bind_function)dlsym(RTLD_NEXT, "bind");
        if (libc_bind == NULL) {
            errno = ENOSYS;
            return -1;
        }
    }

    if (address != NULL && address->sa_family == AF_INET
        && length >= (socklen_t)sizeof(struct sockaddr_in)) {
        struct sockaddr_in ipv4;
        memcpy(&ipv4, address, sizeof ipv4);
        if (ipv4.sin_addr.s_addr == htonl(INADDR_ANY)) {
            ipv4.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            return libc_bind(fd, (const struct sockaddr *)&ipv4, sizeof ipv4);
        }
    } else if (address != NULL && address->sa_family == AF_INET6
               && length >= (socklen_t)sizeof(struct sockaddr_in6)) {
        struct sockaddr_in6 ipv6;
        memcpy(&ipv6, address, sizeof ipv6);
        if (IN6_IS_ADDR_UNSPECIFIED(&ipv6.sin6_addr)) {
            ipv6.sin6_addr = in6addr_loopback;
            return libc_bind(fd, (const struct sockaddr *)&ipv6, sizeof ipv6);
        }
    }
    return libc_bind(fd, address, length);
}

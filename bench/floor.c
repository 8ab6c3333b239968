/* bench/floor.c: the C floor for bench/sandbox.py. A per-connection finger handler that does
 * nothing but the protocol's minimum: read the query line from fd 0 (at most 512 bytes, up to
 * the first LF or EOF), write a fixed answer to fd 1, exit 0. Run in a unit's sandbox, it shows
 * what the sandbox costs by itself; the difference to fingerd in the same sandbox is Python.
 * Built static, so that the booted container needs no compiler and no matching libc.
 */
#include <string.h>
#include <unistd.h>

int main(void) {
    static const char answer[] = "Happy and well\r\n";
    char buf[512];
    size_t have = 0;
    while (have < sizeof buf) {
        ssize_t n = read(0, buf + have, sizeof buf - have);
        if (n <= 0)
            break;
        have += (size_t)n;
        if (memchr(buf, '\n', have))
            break;
    }
    return write(1, answer, sizeof answer - 1) == (ssize_t)(sizeof answer - 1) ? 0 : 1;
}

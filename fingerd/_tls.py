"""TLS for fingerd.httpclient, imported only for an https URL: ``ssl`` costs 17 times more to
import (17 ms, README.md, the `http` backend) than everything else an http lookup needs.

Certificates are looked up in the hashed system CA directory, which OpenSSL reads lazily (only
the CA a server's chain needs, 0.2 ms); ``ssl.create_default_context()`` parses the whole CA
bundle (27 ms).
"""

import ssl
import time

from fingerd.httpclient import URL, HttpError

TYPE_CHECKING = False
if TYPE_CHECKING:
    import _socket


def client_context(verify: bool, ca_file: str) -> "ssl.SSLContext":
    """A client context: TLS 1.2 or later, certificate chain and host name checked unless
    ``verify`` is false, against ``ca_file`` or the system's CAs."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies certificate and name
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif ca_file:
        try:
            context.load_verify_locations(cafile=ca_file)
        except (OSError, ValueError) as e:  # gone or unreadable since the config was loaded
            raise HttpError(f"cannot load the CAs in {ca_file!r}: "
                            f"{getattr(e, 'reason', None) or getattr(e, 'strerror', None) or e}"
                            ) from None
    else:
        _load_system_cas(context)
    return context


def wrap(context: "ssl.SSLContext", sock: "_socket.socket", url: "URL",
         deadline: float) -> "ssl.SSLSocket":
    """TLS over a connected socket, by ``deadline``; the handshake (certificate and name
    check) happens here. The socket is closed if it fails.

    The host name goes as ASCII bytes: ``ssl`` encodes a ``str`` with the ``idna`` codec,
    which imports ``re``.
    """
    try:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"{url.for_log()}: deadline passed")
        sock.settimeout(left)
        return context.wrap_socket(sock, server_hostname=url.host.encode("ascii"))  # type: ignore[arg-type]
    except ssl.SSLCertVerificationError as e:
        sock.close()
        raise HttpError(f"{url.for_log()}: TLS certificate not accepted: "
                        f"{e.verify_message or e.reason}") from None
    except ssl.SSLError as e:
        sock.close()
        raise HttpError(f"{url.for_log()}: TLS error: {e.reason or e}") from None
    except TimeoutError:
        sock.close()
        raise
    except OSError as e:  # a reset or close in the middle of the handshake
        sock.close()
        raise HttpError(f"{url.for_log()}: TLS handshake failed: {e.strerror or e}") from None
    except BaseException:
        sock.close()
        raise


def _load_system_cas(context: "ssl.SSLContext") -> None:
    """Trust the system's CAs, as cheaply as possible.

    ``SSL_CERT_FILE``/``SSL_CERT_DIR`` win, as in OpenSSL. Otherwise the hashed directory
    (/etc/ssl/certs on Debian, kept by update-ca-certificates) is used: OpenSSL reads from it
    only the CA a server's chain needs. The bundle file is the fallback where there is no
    such directory.
    """
    import os

    paths = ssl.get_default_verify_paths()
    cafile = os.environ.get(paths.openssl_cafile_env)
    capath = os.environ.get(paths.openssl_capath_env)
    if cafile or capath:
        context.load_verify_locations(cafile=cafile or None, capath=capath or None)
    elif paths.capath and os.path.isdir(paths.capath):
        context.load_verify_locations(capath=paths.capath)
    else:
        context.set_default_verify_paths()

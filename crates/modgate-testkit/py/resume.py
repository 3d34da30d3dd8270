"""A TLS client that resumes sessions, driven line by line (used by modgate's security tests).

Python's `ssl` module is OpenSSL's client: an implementation independent of the gateway's
rustls. Usage: resume.py HOST PORT CA CERT KEY TLS_VERSION(1.2|1.3) PATH
Each line on stdin is one connection: "resume" offers the last session (TLS 1.2 session ID or
TLS 1.3 ticket), "fresh" starts a full handshake. Each prints one line:
  reused=<True|False> status=<code> body=<first line of the body>
or
  error=<exception class>: <message>
The session kept for the next "resume" is the newest one the server gave, so resumptions chain.
"""
import socket
import ssl
import sys

host, port, ca, cert, key, version, path = sys.argv[1:8]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.load_verify_locations(ca)
ctx.load_cert_chain(cert, key)
v = ssl.TLSVersion.TLSv1_3 if version == "1.3" else ssl.TLSVersion.TLSv1_2
ctx.minimum_version = v
ctx.maximum_version = v
session = None

for line in sys.stdin:
    mode = line.strip()
    if not mode:
        continue
    offer = session if mode == "resume" else None
    try:
        with socket.create_connection((host, int(port)), timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost", session=offer) as tls:
                request = f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
                tls.sendall(request.encode())
                data = b""
                while len(data) < 1 << 20:
                    try:
                        chunk = tls.recv(65536)
                    except (ssl.SSLError, ConnectionError):
                        break
                    if not chunk:
                        break
                    data += chunk
                if tls.session is not None:
                    session = tls.session
                status = "none"
                if data.startswith(b"HTTP/"):
                    status = data.split(b" ", 2)[1].decode()
                body = data.split(b"\r\n\r\n", 1)[-1].split(b"\n", 1)[0]
                body = body.decode("utf-8", "replace")
                print(f"reused={tls.session_reused} status={status} body={body}", flush=True)
    except Exception as e:  # noqa: BLE001 - every failure is reported to the test
        print(f"error={type(e).__name__}: {e}", flush=True)

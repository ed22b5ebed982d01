"""A DevTools gateway for the remote-browser tests: it admits a token and forwards to Chromium's DevTools port.

It stands in for what fronts a browser service (Browserless' `?token=`, a bearer token at a proxy): a request
must carry `token=SECRET` in its query or `Authorization: Bearer SECRET`, else it gets 401.  The token is
taken off the request before it reaches Chromium, whose own port only listens on its loopback.  Run it as
`python cdp_gateway.py LISTEN_HOST LISTEN_PORT UPSTREAM_PORT SECRET` (in the browser's network namespace).
"""

from __future__ import annotations

import asyncio
import sys
import urllib.parse

HEAD_LIMIT = 16384


def admitted(head: bytes, secret: str) -> bytes | None:
    """The request head with the token taken off, or None when it carries no valid token."""
    lines = head.decode("latin-1").split("\r\n")
    method, target, version = lines[0].split(" ", 2)
    parts = urllib.parse.urlsplit(target)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    ok = ("token", secret) in query or any(
        line.lower().startswith("authorization:") and line.split(":", 1)[1].strip() == f"Bearer {secret}"
        for line in lines[1:])
    if not ok:
        return None
    kept = urllib.parse.urlencode([(k, v) for k, v in query if k != "token"])
    target = urllib.parse.urlunsplit(("", "", parts.path, kept, ""))
    headers = [line for line in lines[1:] if not line.lower().startswith("authorization:")]
    return "\r\n".join([f"{method} {target} {version}", *headers]).encode("latin-1")


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, upstream_port: int, secret: str) -> None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        writer.close()
        return
    forwarded = admitted(head[:-4], secret)
    if forwarded is None:
        writer.write(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()
        return
    try:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", upstream_port)
    except OSError:
        writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()
        return
    up_writer.write(forwarded + b"\r\n\r\n")
    await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


async def main(host: str, port: int, upstream_port: int, secret: str) -> None:
    server = await asyncio.start_server(lambda r, w: serve(r, w, upstream_port, secret), host, port, limit=HEAD_LIMIT)
    print("listening", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]))

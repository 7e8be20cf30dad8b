"""The capture SMTP server of the compose stack's ``dev`` profile.

Runs the project's ``producers.capture.CaptureServer`` (the one ``bulkmail demo`` uses:
accepts everything, writes each message to a folder, nothing leaves the machine) on every
interface of the container, so that the workers in the other containers can reach it.

CaptureServer binds 127.0.0.1 only and has no option for another address; until it has
one (see docs/deployment.md), this launcher sets its controller's host before starting.
"""

from __future__ import annotations

import argparse
import signal
import threading

from producers.capture import CaptureServer

__all__ = ["main"]


def main() -> None:
    """Serve until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=2525)
    parser.add_argument("--folder", default="/var/lib/bulkmail-capture")
    args = parser.parse_args()
    server = CaptureServer(args.folder, port=args.port)
    # "" makes aiosmtpd bind every interface (and check itself on localhost)
    server._controller.hostname = ""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with server:
        print(f"capture SMTP server on port {server.port}, writing to {args.folder}",
              flush=True)
        stop.wait()
    print(f"capture SMTP server stopped after {server.received} messages", flush=True)


if __name__ == "__main__":
    main()

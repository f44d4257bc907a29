"""ctl client: ``python3 -m ccdrill.standins.ctl <port> [JSON]``.

No JSON -> GET /stats; with JSON (an object) -> POST /ctl. Prints the JSON answer on stdout;
exit 1 (message on stderr) on a connection error, a non-200 answer or a non-JSON answer.
Used by checks through ``docker exec``, so stdlib only and loopback only.
"""

from __future__ import annotations

import http.client
import json
import sys


def request(port: int, body: dict | None = None, host: str = "127.0.0.1", timeout: float = 10.0) -> dict:
    """One ctl round trip; raises RuntimeError with a readable message on any failure."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        if body is None:
            conn.request("GET", "/stats")
        else:
            conn.request("POST", "/ctl", body=json.dumps(body).encode(),
                         headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        raw = resp.read()
    except (OSError, http.client.HTTPException) as e:
        raise RuntimeError(f"ctl {host}:{port}: {e}") from e
    finally:
        conn.close()
    try:
        answer = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RuntimeError(f"ctl {host}:{port}: answer is not JSON: {raw[:200]!r}") from e
    if resp.status != 200:
        err = answer.get("error") if isinstance(answer, dict) else answer
        raise RuntimeError(f"ctl {host}:{port}: HTTP {resp.status}: {err}")
    return answer


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not 1 <= len(args) <= 2 or not args[0].isdigit():
        print("usage: python3 -m ccdrill.standins.ctl <port> [JSON]", file=sys.stderr)
        return 1
    body = None
    if len(args) == 2:
        try:
            body = json.loads(args[1])
        except json.JSONDecodeError as e:
            print(f"ctl: invalid JSON argument: {e}", file=sys.stderr)
            return 1
        if not isinstance(body, dict):
            print("ctl: JSON argument must be an object", file=sys.stderr)
            return 1
    try:
        answer = request(int(args[0]), body)
    except RuntimeError as e:
        print(str(e), file=sys.stderr)
        return 1
    print(json.dumps(answer, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())

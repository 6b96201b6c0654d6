"""
Warm renditions from storage, side by side in one run, on the same files:

  pymager-tx        twistd, memory cache off: every request reads its file
  nginx static      nginx sending those very files from their directory
  nginx + accel     nginx in front of a pymager-tx with [http]
                    accel_redirect_prefix: the service answers headers and
                    X-Accel-Redirect, nginx sends the file (etc/nginx.conf)
  nginx + cache     nginx's cache in front of the first pymager-tx, as
                    etc/nginx.conf sets it: an entry is fresh for 10 s, then
                    revalidated with If-None-Match (a 304 from the service)

    python bench/behind_nginx.py [--seconds 5] [--rounds 3] [--out bench/out/behind-nginx.md]

Each pymager-tx has its own data directory; both get the same JPEGs of the
photo corpus and derive the same renditions, and nginx static serves the
accel one's files (the paths its X-Accel-Redirect answers name).  wrk runs
every target in turn, --rounds times, and the report gives the median rate
of each and the ratios.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import loadgen
import photos
import servers

PREFIX = "/_pymager_files/"
SIZES = ["150x150", "200x200", "256x256", "320x240"]
NGINX = """\
{user}worker_processes {workers};
error_log {directory}/error.log warn;
pid {directory}/nginx.pid;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    types {{ image/jpeg jpg jpeg; }}
    default_type application/octet-stream;
    client_body_temp_path {directory}/body;
    proxy_temp_path {directory}/proxy;
    fastcgi_temp_path {directory}/fastcgi;
    uwsgi_temp_path {directory}/uwsgi;
    scgi_temp_path {directory}/scgi;
    upstream pymager {{ server 127.0.0.1:{upstream}; keepalive 32; }}
    upstream plain {{ server 127.0.0.1:{plain}; keepalive 32; }}
    proxy_cache_path {directory}/cache levels=1:2 keys_zone=pymager:10m max_size=1g inactive=30d;
    server {{
        listen 127.0.0.1:{cache_port};
        location /derived/ {{
            proxy_pass http://plain;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_cache pymager;
            proxy_ignore_headers Cache-Control Expires;
            proxy_cache_valid 200 10s;
            proxy_cache_revalidate on;
            proxy_cache_lock on;
        }}
    }}
    server {{
        listen 127.0.0.1:{port};
        location /static/ {{ alias {files}/; }}
        location /derived/ {{
            proxy_pass http://pymager;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
        }}
        location {prefix} {{
            internal;
            alias {files}/;
            etag off;
            add_header ETag $upstream_http_etag;
            add_header Last-Modified $upstream_http_last_modified;
            add_header X-Content-Type-Options nosniff;
        }}
    }}
}}
"""


def request(port: int, method: str, path: str, body: bytes = b"") -> http.client.HTTPResponse:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    connection.request(method, path, body=body or None)
    return connection.getresponse()


def prepare(server: servers.Server, corpus: list[photos.Photo], corpus_dir: Path) -> list[str]:
    paths = []
    for photo in corpus:
        answer = request(
            server.port, "PUT", f"/original/{photo.image_id}", (corpus_dir / photo.name).read_bytes()
        )
        assert answer.status == 201, (answer.status, answer.read())
        for size in SIZES:
            path = f"/derived/{photo.image_id}-{size}.jpg"
            answer = request(server.port, "GET", path)
            answer.read()
            assert answer.status == 200, (path, answer.status)
            paths.append(path)
    return paths


def start_nginx(
    directory: Path, files: Path, upstream: int, plain: int, workers: int
) -> tuple[subprocess.Popen[bytes], int, int]:
    """nginx: static files, X-Accel-Redirect in front of upstream (port),
    and its cache in front of plain (cache port)."""
    port, cache_port = servers.free_port(), servers.free_port()
    config = directory / "nginx.conf"
    config.write_text(
        NGINX.format(
            # As root, nginx's workers would drop to nobody, who cannot read the temporary directory.
            user="user root;\n" if os.geteuid() == 0 else "",
            workers=workers,
            directory=directory,
            port=port,
            upstream=upstream,
            plain=plain,
            cache_port=cache_port,
            files=files,
            prefix=PREFIX,
        )
    )
    process = subprocess.Popen(["nginx", "-p", str(directory), "-c", str(config), "-g", "daemon off;"])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            request(port, "GET", "/static/")
            return process, port, cache_port
        except OSError:
            time.sleep(0.05)
    process.kill()
    sys.exit("nginx did not start")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2, help="pymager-tx processes and nginx workers")
    parser.add_argument("--photos", type=int, default=4, help="JPEGs of the corpus uploaded")
    parser.add_argument("--corpus-dir", type=Path, default=photos.DEFAULT_DIRECTORY)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "out" / "behind-nginx.md")
    arguments = parser.parse_args()
    corpus = [photo for photo in photos.ensure(arguments.corpus_dir) if photo.format == "JPEG"][
        : arguments.photos
    ]
    rates: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as temporary:
        root = Path(temporary)
        started: list[servers.Server] = []
        nginx = None
        try:
            for name, extra in (("plain", ""), ("accel", f'[http]\naccel_redirect_prefix = "{PREFIX}"\n')):
                (root / name).mkdir()
                started.append(
                    servers.start_pymager(
                        root / name,
                        SIZES,
                        threads=1,
                        workers=arguments.workers,
                        access_log=False,
                        memory_cache_bytes=0,
                        name=f"pymager-tx {name}",
                        extra_config=extra,
                    )
                )
            plain, accel = started
            paths = prepare(plain, corpus, arguments.corpus_dir)
            prepare(accel, corpus, arguments.corpus_dir)
            files = root / "accel" / "data" / "files"
            (root / "nginx").mkdir()
            nginx, port, cache_port = start_nginx(
                root / "nginx", files, accel.port, plain.port, arguments.workers
            )
            static = []
            for path in paths:
                answer = request(port, "GET", path)
                body = answer.read()
                assert answer.status == 200 and body and answer.getheader("ETag"), (path, answer.status)
                direct = request(accel.port, "GET", path)
                direct.read()
                static.append("/static/" + (direct.getheader("X-Accel-Redirect") or "").removeprefix(PREFIX))
                cached = request(cache_port, "GET", path)  # into nginx's cache
                assert cached.status == 200 and cached.read(), (path, cached.status)
            targets = {
                "pymager-tx": (plain.base_url, paths, plain),
                "nginx static": (f"http://127.0.0.1:{port}", static, None),
                "nginx + accel": (f"http://127.0.0.1:{port}", paths, accel),
                "nginx + cache": (f"http://127.0.0.1:{cache_port}", paths, plain),
            }
            for _ in range(arguments.rounds):
                for name, (base, urls, server) in targets.items():
                    phase = loadgen.run_wrk(
                        name,
                        base,
                        urls,
                        arguments.concurrency,
                        arguments.seconds,
                        server_cpu=server.cpu_seconds if server else None,
                    )
                    assert not phase.errors, phase.errors
                    rates.setdefault(name, []).append(phase.rate)
                    if server:
                        cpu.setdefault(name, []).append(phase.per_request_ms(phase.server_cpu))
                    print(f"{name:14} {phase.rate:9.0f} req/s", flush=True)
        finally:
            if nginx is not None:
                nginx.terminate()
                nginx.wait(10)
            for server in started:
                server.stop()
    median = {name: statistics.median(values) for name, values in rates.items()}
    lines = [
        f"`python bench/behind_nginx.py --seconds {arguments.seconds:g} --rounds {arguments.rounds} "
        f"--concurrency {arguments.concurrency} --workers {arguments.workers}`; machine: {platform.node()}, "
        f"{platform.machine()}, nproc {len(os.sched_getaffinity(0))}, Python {platform.python_version()}; "
        f"{len(paths)} renditions of {len(corpus)} corpus JPEGs ({', '.join(SIZES)}), memory cache off.",
        "",
        "| target | req/s (median of rounds) | pymager-tx CPU ms/req | vs nginx static |",
        "|---|---|---|---|",
    ]
    for name, rate in median.items():
        spent = f"{statistics.median(cpu[name]):.2f}" if name in cpu else "-"
        lines.append(f"| {name} | {rate:.0f} | {spent} | {rate / median['nginx static']:.2f} |")
    text = "\n".join(lines) + "\n"
    arguments.out.parent.mkdir(parents=True, exist_ok=True)
    arguments.out.write_text(text)
    # Beside the Markdown, the figures for bench/fast_paths.py.
    arguments.out.with_suffix(".json").write_text(
        json.dumps(
            {
                "rates": median,
                "cpu_ms": {name: statistics.median(values) for name, values in cpu.items()},
                "versus_static": {name: rate / median["nginx static"] for name, rate in median.items()},
            },
            indent=2,
        )
        + "\n"
    )
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

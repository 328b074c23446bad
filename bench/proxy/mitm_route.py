"""mitmproxy addon for bench/proxy_bench.sh: send an intercepted name to
another address, like curl's --connect-to and scrim's `[proxy] resolve`.

    mitmdump -s bench/proxy/mitm_route.py \
        --set bench_route=api.openai.com:443=127.0.0.1:9443 ...

Only the TCP destination changes: the upstream TLS connection keeps the
client's name as SNI and is verified against that name (and against
ssl_verify_upstream_trusted_ca), as for a real api.openai.com.
"""

from mitmproxy import ctx


class Route:
    def load(self, loader):
        loader.add_option(
            "bench_route", str, "",
            "Space-separated HOST:PORT=ADDR:PORT overrides of server addresses.",
        )

    def _table(self):
        table = {}
        for item in ctx.options.bench_route.split():
            src, dst = item.split("=", 1)
            host, port = src.rsplit(":", 1)
            addr, aport = dst.rsplit(":", 1)
            table[(host.lower(), int(port))] = (addr, int(aport))
        return table

    def server_connect(self, data):
        server = data.server
        if not server.address:
            return
        host, port = server.address
        dst = self._table().get((str(host).lower(), int(port)))
        if dst is None:
            return
        # Keep the name for SNI and certificate checks before the address
        # becomes a bare IP.
        if server.sni is None:
            server.sni = data.client.sni or host
        server.address = dst


addons = [Route()]

"""Where a webhook may point (issue 22, finding 5: server-side request forgery).

A webhook URL comes from whoever sends a request, but the dispatcher POSTs to it from inside the operator's
network: without a check a request could make it call a cloud metadata service, a database's HTTP port or
pixelmill's own tokenless loopback API. `check_webhook_target` resolves the host once and refuses every
address that is not public (loopback, link-local, private, shared, multicast, reserved, unspecified, cloud
metadata; IPv4 hidden in IPv6 forms too) and URLs with userinfo. The dispatcher then connects to exactly the
address that was checked (contract/webhook_post.py), so a second DNS answer (rebinding) is never used. The
operator's allow-list (PIXELMILL_WEBHOOK_ALLOW_HOSTS) is the only way to reach internal receivers.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from contract.faults import mask

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Sequence[str]]

ALLOW_HOSTS_VARIABLE = "PIXELMILL_WEBHOOK_ALLOW_HOSTS"
_HINT = f"an operator can allow an internal receiver with {ALLOW_HOSTS_VARIABLE}"

# Cloud metadata and platform services: refused even when an allow-list entry names the host, unless an address
# entry (IP or CIDR) names the address itself. 169.254.169.254 serves AWS, GCP, Azure, OpenStack and others.
_METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",
        "169.254.170.2",
        "169.254.169.123",
        "fd00:ec2::254",
        "100.100.100.200",
        "168.63.129.16",
    )
)
_METADATA_NAMES = frozenset(
    ("metadata.google.internal", "metadata.goog", "metadata", "instance-data", "instance-data.ec2.internal")
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAME = re.compile(r"^(\*\.)?[a-z0-9_]([a-z0-9_.-]*[a-z0-9_])?$")


class WebhookUrlError(ValueError):
    """A webhook URL the dispatcher will not call; the message says why and what to change."""


class WebhookResolveError(WebhookUrlError):
    """The host did not resolve: refused at submit time, retried at delivery time (DNS may be back)."""


@dataclass(frozen=True)
class HostEntry:
    """One allow-list entry: a host name (`*.` for its subdomains) or an address network, optionally one port."""

    name: str | None
    network: IPNetwork | None
    port: int | None

    def matches(self, host: str, address: IPAddress | None, port: int) -> bool:
        if self.port is not None and self.port != port:
            return False
        if self.network is not None:
            return address is not None and _unmapped(address) in self.network
        assert self.name is not None
        if self.name.startswith("*."):
            return host.endswith(self.name[1:])
        return host == self.name


def parse_hosts(text: str | Iterable[str], variable: str = ALLOW_HOSTS_VARIABLE) -> tuple[HostEntry, ...]:
    """`host`, `host:port`, `*.domain`, `IP`, `IP:port`, `[IPv6]:port` or `CIDR`, comma-separated (or a list)."""
    items = text.split(",") if isinstance(text, str) else list(text)
    return tuple(_parse_entry(item.strip().lower(), variable) for item in items if item.strip())


def _parse_entry(entry: str, variable: str) -> HostEntry:
    host, port = entry, None
    if entry.startswith("["):
        host, _, rest = entry[1:].partition("]")
        port = _port(rest.removeprefix(":"), entry, variable) if rest else None
    elif entry.count(":") == 1:
        host, _, text = entry.partition(":")
        port = _port(text, entry, variable)
    try:
        return HostEntry(None, ipaddress.ip_network(host, strict=False), port)
    except ValueError:
        pass
    host = host.rstrip(".")
    if not _NAME.match(host):
        raise ValueError(f"{variable}: {entry!r} is not a host, host:port, IP address or CIDR network")
    return HostEntry(host, None, port)


def _port(text: str, entry: str, variable: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"{variable}: {entry!r} has no valid port (1-65535)")
    return int(text)


@dataclass(frozen=True)
class WebhookTarget:
    """A checked webhook: connect to `address` (never look the host up again), send Host and TLS SNI `host`."""

    url: str
    scheme: str
    host: str
    port: int
    address: str
    target: str  # path and query, as sent in the request line
    allow_listed: bool

    @property
    def host_header(self) -> str:
        name = f"[{self.host}]" if ":" in self.host else self.host
        return name if self.port == {"https": 443, "http": 80}[self.scheme] else f"{name}:{self.port}"


def check_webhook_target(
    url: str,
    *,
    allow_http: bool,
    allow_hosts: Sequence[HostEntry] | str,
    tenant_hosts: Sequence[HostEntry] | Sequence[str] = (),
    resolve: Resolver | None = None,
) -> WebhookTarget:
    """The address to POST `url`'s events to, or WebhookUrlError saying why not (WebhookResolveError: no DNS answer).

    `allow_hosts`: the operator's allow-list (parse_hosts of PIXELMILL_WEBHOOK_ALLOW_HOSTS), the only way to a
    non-public address; it also allows plain http to those receivers. `tenant_hosts`: when not empty, the hosts
    the request's tenant may name (same entry syntax); anything else is refused before any lookup."""
    allow = parse_hosts(allow_hosts) if isinstance(allow_hosts, str) else tuple(allow_hosts)
    tenant = tuple(
        e if isinstance(e, HostEntry) else _parse_entry(e.strip().lower(), "tenant hosts") for e in tenant_hosts
    )
    shown = shown_url(url)
    parts = urlsplit(url)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise WebhookUrlError(f"webhook {shown!r:.200} has an invalid port") from None
    host = (parts.hostname or "").rstrip(".")
    if parts.scheme not in ("https", "http") or not host:
        raise WebhookUrlError(f"webhook must be an https:// URL, got {shown!r:.200}")
    if "@" in parts.netloc:
        raise WebhookUrlError(
            f"webhook {shown!r:.200} has a user name or password in it: refused (they would be sent and logged); "
            "receivers verify the webhook-signature header instead"
        )
    literal = _literal(host)
    if tenant and not any(e.matches(host, literal, port) for e in tenant):
        raise WebhookUrlError(f"webhook {shown!r:.200}: host {host!r} is not one of this tenant's webhook hosts")
    named = any(e.name is not None and e.matches(host, literal, port) for e in allow)
    if host in _METADATA_NAMES or host.endswith(".metadata.google.internal"):
        raise WebhookUrlError(f"webhook {shown!r:.200} names a cloud metadata service: refused")
    if parts.scheme == "http" and not allow_http and not allow:
        raise _plain_http(shown)
    addresses = [literal] if literal is not None else _resolve(host, port, resolve, shown)
    listed = True
    for address in addresses:
        by_address = any(e.network is not None and e.matches(host, address, port) for e in allow)
        why = _not_public(address)
        if address in _METADATA_ADDRESSES or _unmapped(address) in _METADATA_ADDRESSES:
            why = "a cloud metadata address" if not by_address else None
        elif by_address or named:
            why = None
        if why:
            raise WebhookUrlError(f"webhook {shown!r:.200} resolves to {address}, {why}: refused ({_HINT})")
        listed = listed and (by_address or named)
    if parts.scheme == "http" and not allow_http and not listed:
        raise _plain_http(shown)
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    return WebhookTarget(url, parts.scheme, host, port, str(addresses[0]), target, listed)


def _plain_http(shown: str) -> WebhookUrlError:
    return WebhookUrlError(
        f"webhook {shown!r:.200} is plain http: use https, or ask the operator to allow the receiver "
        f"({ALLOW_HOSTS_VARIABLE}) or plain http on a private network (PIXELMILL_WEBHOOK_ALLOW_HTTP=true)"
    )


def shown_url(url: str) -> str:
    """The URL as errors and logs may show it: secrets in the query masked, any userinfo replaced by ***."""
    return re.sub(r"^([A-Za-z][A-Za-z0-9+.-]*://)[^/?#]*@", r"\1***@", mask(url))


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None


def _resolve(host: str, port: int, resolve: Resolver | None, shown: str) -> list[IPAddress]:
    try:
        if resolve is not None:
            found = list(resolve(host, port))
        else:
            found = [str(info[4][0]) for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)]
    except (OSError, UnicodeError) as exc:
        raise WebhookResolveError(f"webhook {shown!r:.200}: host {host!r} does not resolve ({exc})") from None
    addresses = list(dict.fromkeys(ipaddress.ip_address(a.split("%", 1)[0]) for a in found))
    if not addresses:
        raise WebhookResolveError(f"webhook {shown!r:.200}: host {host!r} has no address")
    return addresses


def _unmapped(address: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 address carries (mapped, 6to4, Teredo, NAT64), else the address itself."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address.sixtofour is not None:
            return address.sixtofour
        if address.teredo is not None:
            return address.teredo[1]
        if address in _NAT64:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


def _not_public(address: IPAddress) -> str | None:
    """Why a connection to `address` would reach something other than the public internet; None if it would not."""
    for candidate in dict.fromkeys((_unmapped(address), address)):
        for kind, why in _KINDS:
            if getattr(candidate, f"is_{kind}", False):
                return why
        if not candidate.is_global:
            return "not a public address"
    return None


_KINDS = (
    ("loopback", "a loopback address"),
    ("link_local", "a link-local address"),
    ("multicast", "a multicast address"),
    ("unspecified", "an unspecified address"),
    ("reserved", "a reserved address"),
    ("private", "a private address"),
    ("site_local", "a site-local address"),
)

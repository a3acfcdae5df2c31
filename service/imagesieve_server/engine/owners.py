"""Whose work it is: a client, then one of its connections.

The server's scarce resources (decoding threads, model batches, places of
images in flight, check threads, a collection's turns, alignment workers)
are shared fairly in two levels: first between clients, then between that
client's connections. A client is what call and job slots count (a token's
name, else the address without its port, ``observability._client_of``).
Shared by connection alone, one address opening 16 connections took 16
shares (another client's Embed p50 202-230 ms -> 632-760 ms, a
twenty-seventh probe); shared by client alone, distinct users behind one
proxy address (one client by address) would have no fair order among
them. So 16 connections of one client get one client's share together,
divided fairly among them.

An owner is the pair ``(client, connection)``; a plain string given where
an owner is expected is a connection of the anonymous client ``""`` (what
callers outside a server pass).
"""
from __future__ import annotations

import collections
import contextvars
from typing import Any, Callable, Iterable

Owner = tuple[str, str]           # (client, connection)

# Set per call by the server's interceptor (observability): the gRPC peer
# ("ipv4:127.0.0.1:51234") and the client it belongs to. '' outside a call.
connection: contextvars.ContextVar[str] = contextvars.ContextVar("imagesieve_connection", default="")
client: contextvars.ContextVar[str] = contextvars.ContextVar("imagesieve_client", default="")


def current() -> Owner:
    """The current call's (client, connection); ('', '') outside a call."""
    return client.get(), connection.get()


def owner_of(owner: Owner | str) -> Owner:
    """``owner`` as a pair: a plain string is a connection of client ''."""
    return owner if isinstance(owner, tuple) else ("", owner)


def choose(waiting: Iterable[Owner], client_rank: Callable[[str, list[Owner]], Any],
           owner_rank: Callable[[Owner], Any]) -> Owner:
    """The owner to serve next among ``waiting`` (not empty): the client of
    least ``client_rank(client, its owners among waiting)``, then that
    client's owner of least ``owner_rank(owner)``; the first in
    ``waiting``'s order among equals."""
    by_client: dict[str, list[Owner]] = {}
    for owner in waiting:
        by_client.setdefault(owner[0], []).append(owner)
    if len(by_client) == 1:
        (owners,) = by_client.values()
    else:
        owners = by_client[min(by_client, key=lambda c: client_rank(c, by_client[c]))]
    return owners[0] if len(owners) == 1 else min(owners, key=owner_rank)


class Tally:
    """How many each owner holds, and each client (the sum of its owners');
    an owner or client holding none has no entry."""

    def __init__(self):
        self.owners: collections.Counter = collections.Counter()
        self.clients: collections.Counter = collections.Counter()

    def add(self, owner: Owner) -> None:
        self.owners[owner] += 1
        self.clients[owner[0]] += 1

    def remove(self, owner: Owner) -> None:
        for counts, key in ((self.owners, owner), (self.clients, owner[0])):
            counts[key] -= 1
            if counts[key] <= 0:
                del counts[key]

    def __getitem__(self, owner: Owner) -> int:
        return self.owners[owner]

    def of_client(self, client_name: str) -> int:
        return self.clients[client_name]

    def __bool__(self) -> bool:
        return bool(self.owners)

    def __len__(self) -> int:
        return len(self.owners)

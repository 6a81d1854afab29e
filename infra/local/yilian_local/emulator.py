"""moto's server in a thread of this process, serving one AWS account of its own.

moto keeps its state in process-wide backends, keyed by account. ``mock_aws`` (used by other
tests in the same pytest session) resets *every* backend when it starts and stops, which
would wipe a running local stack, and it uses moto's default account, where the same table
names would collide. So the embedded emulator answers for a dedicated account
(``LOCAL_ACCOUNT_ID``, LocalStack's default, so ARNs read the same on both targets): every
request to this server is stamped with moto's ``x-moto-account-id`` header, and
``patches`` makes moto's reset spare the accounts of running emulators.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

from moto.moto_server.threaded_moto_server import ThreadedMotoServer
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import make_server

LOCAL_ACCOUNT_ID = "000000000000"
_running: Counter[str] = Counter()  # account -> running emulators serving it
_running_lock = threading.Lock()


def protected_accounts() -> set[str]:
    """Accounts of running emulators: moto's reset spares them (see patches)."""
    with _running_lock:
        return {account for account, count in _running.items() if count > 0}


class AccountEmulator(ThreadedMotoServer):
    """``ThreadedMotoServer`` whose every request is served in ``account_id``."""

    def __init__(self, host: str, port: int, account_id: str = LOCAL_ACCOUNT_ID) -> None:
        super().__init__(ip_address=host, port=port, verbose=False)
        self.account_id = account_id

    def _server_entry(self) -> None:
        moto_app = DomainDispatcherApplication(create_backend_app)
        account = self.account_id

        def app(environ: dict[str, Any], start_response: Any) -> Any:
            environ["HTTP_X_MOTO_ACCOUNT_ID"] = account
            return moto_app(environ, start_response)

        self._server = make_server(
            self._ip_address, self._port, app, True, request_handler=MotoRequestHandler
        )
        self._server_ready_event.set()
        self._server.serve_forever()

    def start(self) -> None:
        with _running_lock:
            _running[self.account_id] += 1
        super().start()

    @property
    def port(self) -> int:
        return self.get_host_and_port()[1]

    def stop(self) -> None:
        super().stop()
        if self._server is not None:
            self._server.server_close()
        with _running_lock:
            _running[self.account_id] -= 1

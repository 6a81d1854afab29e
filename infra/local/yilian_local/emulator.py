"""moto's server in a thread of this process, serving one AWS account of its own.

moto keeps its state in process-wide backends, keyed by account. ``mock_aws`` (used by other
tests in the same pytest session) resets *every* backend when it starts and stops, which
would wipe a running local stack, and it uses moto's default account, where the same table
names would collide. So the embedded emulator answers for a dedicated account
(``LOCAL_ACCOUNT_ID``, LocalStack's default, so ARNs read the same on both targets): every
request to this server is stamped with moto's ``x-moto-account-id`` header, and
``patches`` makes moto's reset spare the accounts of running emulators. When the last
emulator of an account stops, that account's state goes with it, as a process exit would.

The emulator also owns the process-wide settings moto reads: ``MOTO_PORT`` (Step Functions
tasks call ``localhost:$MOTO_PORT``) and ``VALIDATE_LAMBDA_S3`` (function code is read from
the working tree, never from S3); both are restored when the last emulator stops.
"""

from __future__ import annotations

import os
import threading
from collections import Counter
from typing import Any

from moto.core.base_backend import BackendDict, backend_lock
from moto.moto_server.threaded_moto_server import ThreadedMotoServer
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import make_server

LOCAL_ACCOUNT_ID = "000000000000"
_SETTINGS = {"VALIDATE_LAMBDA_S3": "false"}

_running: Counter[str] = Counter()  # account -> running emulators serving it
_ports: list[int] = []  # running emulators, latest last (MOTO_PORT names one of them)
_saved: dict[str, str | None] = {}  # process settings before the first emulator started
_lock = threading.Lock()


def protected_accounts() -> set[str]:
    """Accounts of running emulators: moto's reset spares them (see patches)."""
    with _lock:
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

    @property
    def port(self) -> int:
        return self.get_host_and_port()[1]

    @property
    def endpoint_url(self) -> str:
        host, port = self.get_host_and_port()
        return f"http://{host}:{port}"

    def start(self) -> None:
        with _lock:
            _running[self.account_id] += 1
            if not _ports:
                _saved.update({k: os.environ.get(k) for k in [*_SETTINGS, "MOTO_PORT"]})
                os.environ.update(_SETTINGS)
        super().start()
        with _lock:
            _ports.append(self.port)
            os.environ["MOTO_PORT"] = str(self.port)

    def stop(self) -> None:
        port = self.port
        super().stop()
        if self._server is not None:
            self._server.server_close()
        with _lock:
            _ports.remove(port)
            _running[self.account_id] -= 1
            if _running[self.account_id] == 0:
                _forget_account(self.account_id)
            if _ports:
                os.environ["MOTO_PORT"] = str(_ports[-1])
            else:
                for key, value in _saved.items():
                    if value is None:
                        os.environ.pop(key, None)
                    else:
                        os.environ[key] = value


def _forget_account(account_id: str) -> None:
    """Drop every backend of ``account_id`` (moto's reset, for one account)."""
    with backend_lock:
        for backend in list(BackendDict._instances):  # type: ignore[misc]
            if account_id in backend.keys():
                backend[account_id].reset()
                del backend[account_id]

"""``login`` and ``logout`` against fake services (who may call them: the dispatcher's tests)."""

from __future__ import annotations

import pytest

from cofferd.errors import InvalidParams


def test_login_hands_the_credentials_to_the_client_and_says_where_the_login_came_from(
    app, invoke
) -> None:
    assert invoke("login", email="a@b.c", password="pw") == {"status": "ok"}
    assert app.client.logins == [("a@b.c", "pw")]
    assert app.boot_login.source == "login call"


@pytest.mark.parametrize(("email", "password"), [("", "pw"), ("a@b.c", 7), (None, "pw")])
def test_login_refuses_credentials_that_are_not_strings(app, invoke, email, password) -> None:
    with pytest.raises(InvalidParams):
        invoke("login", email=email, password=password)
    assert app.client.logins == []


def test_logout_drops_the_login_and_every_record(app, invoke) -> None:
    app.client.authenticated = True
    app.boot_login.source = "credential"
    app.field.records = 3
    assert invoke("logout") == {"status": "ok", "records_erased": 3}
    assert (app.client.logouts, app.client.authenticated) == (1, False)
    assert app.boot_login.source == "none"
    assert invoke("logout")["records_erased"] == 0

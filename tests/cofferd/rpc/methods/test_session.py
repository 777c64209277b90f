"""``login`` and ``logout`` against fake services (who may call them: the dispatcher's tests)."""

from __future__ import annotations

import json

import pytest

from cofferd.errors import BadRequest, InvalidParams, StateUnwritable, Unauthorized
from cofferd.field.enrollment import Enrollment
from cofferd.field.identity import DeviceIdentity, IdentityState


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


def test_a_login_as_another_identity_erases_the_records_of_the_one_before(app, invoke) -> None:
    invoke("login", email="a@b.c", password="pw")
    app.field.records = 2
    invoke("login", email="a@b.c", password="pw")  # the same identity: kept
    assert app.field.records == 2
    invoke("login", email="other@b.c", password="pw")
    assert app.field.records == 0


def test_enroll_keeps_the_device_id_bound_to_the_key(app, invoke) -> None:
    with pytest.raises(Unauthorized):
        invoke("enroll", token="cet_bad")
    assert app.enrollment.device_id is None
    assert app.enrollments == 0
    with pytest.raises(BadRequest):
        invoke("enroll", token="two\nlines")
    assert invoke("enroll", token=" cet_good\n") == {
        "status": "ok",
        "device_id": "d_fake",
        "role": "reader",
    }
    assert app.enrollments == 1
    state = json.loads((app.settings.state_dir / "identity.json").read_text())
    assert state == {
        "device_id": "d_fake",
        "public_key": app.identity.identity.public_key,
        "upstream": "http://127.0.0.1:9",
    }
    assert "cet_good" not in json.dumps(state)
    # Read again at start: enrolled with this key; another key is not.
    again = Enrollment(app.settings.state_dir, app.identity, app.settings.upstream_url, None)
    assert again.device_id == "d_fake"
    other = IdentityState(DeviceIdentity.generate())
    assert (
        Enrollment(app.settings.state_dir, other, app.settings.upstream_url, None).device_id is None
    )
    assert Enrollment(app.settings.state_dir, app.identity, "http://other", None).device_id is None


def test_enroll_into_a_state_dir_that_cannot_be_written_says_so(app, invoke) -> None:
    app.enrollment._path = app.settings.state_dir / "absent" / "identity.json"
    with pytest.raises(StateUnwritable, match="enrolled as device d_fake, but cannot keep it"):
        invoke("enroll", token="cet_good")
    assert app.enrollment.device_id is None
    assert app.enrollments == 0

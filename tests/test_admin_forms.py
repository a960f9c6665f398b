"""Dashboard forms: a form token on every form that changes anything, and an origin check that
works behind a proxy that rewrites ``Host`` (nginx's default ``proxy_set_header Host $proxy_host``).
"""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from collector.app import create_app
from collector.keys import KeyLayout
from collector.settings import Settings
from collector.storage import ObjectStore
from tests.support.factories import make_status, make_submission, put_status, put_submission
from tests.support.settings import racing_no_erasure
from tests.test_admin_http import PASSWORD, form_token, log_in

PUBLIC = "collector.example.org"
UPSTREAM = "http://127.0.0.1:5005"  # what the proxy puts in Host


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The shared settings, without the erasure's settle wait: no upload races these erasures."""
    return racing_no_erasure(settings)


@pytest.fixture
def stored(store: ObjectStore, layout: KeyLayout) -> set[str]:
    put_status(store, layout, make_status("FORM1", sessions=1))
    put_submission(store, layout, make_submission("FORM1"))
    return {info.key for info in store.list(layout.participant_dir("FORM1"))}


@pytest.mark.parametrize("token", [None, "0" * 64, "other-session"], ids=["none", "wrong", "other-session"])
def test_erase_without_this_sessions_form_token_is_refused_and_deletes_nothing(
    client: TestClient, store: ObjectStore, layout: KeyLayout, stored: set[str], token: str | None
) -> None:
    form = {"reason": "withdrew", "confirm": "FORM1"}
    if token == "other-session":
        log_in(client)
        token = form_token(client)  # a real token, of a session that has since ended
        client.post("/admin/logout", data={"token": token})
    if token is not None:
        form["token"] = token
    log_in(client)
    answer = client.post("/admin/participants/FORM1/erase", data=form)
    assert answer.status_code == 403 and answer.json()["error"].startswith("the form has expired")
    assert {info.key for info in store.list(layout.participant_dir("FORM1"))} == stored
    assert not list(store.list(layout.audit_root))  # no audit record, no erasure intent

    form["token"] = form_token(client, "/admin/participants/FORM1/erase")
    done = client.post("/admin/participants/FORM1/erase", data=form)
    assert done.status_code == 200 and 'id="erase-done"' in done.text
    assert [info.key for info in store.list(layout.participant_dir("FORM1"))] == [layout.status_key("FORM1")]


def test_every_form_that_changes_something_carries_the_token(client: TestClient, stored: set[str]) -> None:
    log_in(client)
    token = form_token(client)
    for page in (
        "/admin",
        "/admin/participants",
        "/admin/participants/FORM1",
        "/admin/participants/FORM1/erase",
    ):
        html = client.get(page).text
        forms = [chunk for chunk in html.split("<form")[1:] if 'method="post"' in chunk.split(">", 1)[0]]
        assert forms, page
        for chunk in forms:
            assert f'name="token" value="{token}"' in chunk.split("</form>", 1)[0], page


def test_logout_and_refresh_without_the_token_are_refused(client: TestClient) -> None:
    log_in(client)
    assert client.post("/admin/refresh", follow_redirects=False).status_code == 403
    assert client.post("/admin/logout", follow_redirects=False).status_code == 403
    assert client.get("/admin", follow_redirects=False).status_code == 200  # still logged in
    token = form_token(client)
    assert client.post("/admin/refresh", data={"token": token}, follow_redirects=False).status_code == 303
    assert client.post("/admin/logout", data={"token": token}, follow_redirects=False).status_code == 303
    client.cookies.clear()
    assert client.get("/admin", follow_redirects=False).status_code == 303


def login_through_proxy(client: TestClient, headers: dict[str, str]) -> int:
    answer = client.post("/admin/login", data={"password": PASSWORD}, headers=headers, follow_redirects=False)
    return answer.status_code


@pytest.mark.parametrize("backend", ["local"], indirect=True)
def test_behind_a_host_rewriting_proxy_the_right_password_gets_in(settings: Settings) -> None:
    origin = {"Origin": f"https://{PUBLIC}"}
    with TestClient(create_app(settings), base_url=UPSTREAM) as client:
        assert login_through_proxy(client, {**origin, "X-Forwarded-Host": PUBLIC}) == 303
        # The erase form too, once logged in through the proxy.
        put_status(
            client.app.state.admin.services.store, KeyLayout(settings.data_prefix), make_status("FORM2")
        )  # type: ignore[attr-defined]
        token = form_token(client, "/admin/participants/FORM2/erase")
        erased = client.post(
            "/admin/participants/FORM2/erase",
            data={"reason": "withdrew", "confirm": "FORM2", "token": token},
            headers={**origin, "X-Forwarded-Host": PUBLIC},
        )
        assert erased.status_code == 200 and 'id="erase-done"' in erased.text
        # Neither header nor setting names the public address: refused, as before.
        assert login_through_proxy(client, origin) == 403
        # Another site stays refused whatever the proxy says.
        assert (
            login_through_proxy(client, {"Origin": "https://evil.example", "X-Forwarded-Host": PUBLIC}) == 403
        )


@pytest.mark.parametrize("backend", ["local"], indirect=True)
def test_public_url_names_the_dashboards_origin(settings: Settings) -> None:
    configured = settings.model_copy(update={"public_url": f"https://{PUBLIC}/"})
    with TestClient(create_app(configured), base_url=UPSTREAM) as client:
        assert login_through_proxy(client, {"Origin": "https://evil.example"}) == 403
        assert login_through_proxy(client, {"Origin": f"http://{PUBLIC}"}) == 403  # another scheme
        assert login_through_proxy(client, {"Origin": f"https://{PUBLIC}"}) == 303


@pytest.mark.parametrize("value", ["collector.example.org", "ftp://collector.example.org", "https://"])
def test_a_public_url_that_is_not_an_http_url_stops_the_collector(value: str) -> None:
    with pytest.raises(ValidationError, match="PUBLIC_URL"):
        Settings(public_url=value)

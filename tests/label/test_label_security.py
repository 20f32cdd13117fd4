"""The ranking app through FastAPI's TestClient: token, CSRF, headers, XSS, SQL injection, body
size, validation, duplicate submissions and the per-annotator shuffle."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from label_support import SQLI, XSS_IMG, XSS_SCRIPT, write_jsonl

from rlft.label.app import HERE, create_app, display_order, template_env
from rlft.label.candidates import import_responses
from rlft.label.db import LabelStore, export_rows
from rlft.label.security import CSP, cookie_names

TOKEN = "test-token-123"
CSRF_RE = re.compile(r'<meta name="csrf-token" content="([^"]+)">')


@pytest.fixture
def db(tmp_path: Path, responses_file: Path) -> Path:
    path = tmp_path / "label.sqlite"
    import_responses(LabelStore(path), str(responses_file))
    return path


@pytest.fixture
def client(db: Path) -> TestClient:
    return TestClient(create_app(db, TOKEN), base_url="http://127.0.0.1")


def login(client: TestClient) -> str:
    """Open the page with ?token= (sets the cookies); return the page's CSRF token."""
    r = client.get("/", params={"token": TOKEN})
    assert r.status_code == 200
    return CSRF_RE.search(r.text).group(1)


def rank(client: TestClient, csrf: str | None, **body) -> object:
    headers = {} if csrf is None else {"X-CSRF-Token": csrf}
    return client.post("/api/rank", json=body, headers=headers)


PROTECTED = [("GET", "/"), ("GET", "/api/next?annotator=a"), ("GET", "/static/app.js"), ("POST", "/api/rank")]


@pytest.mark.parametrize(("method", "path"), PROTECTED)
def test_no_token_is_refused_everywhere(client: TestClient, method: str, path: str):
    r = client.request(method, path, json={"prompt_id": "q1", "annotator": "a", "ranking": [0, 1, 2, 3]})
    assert r.status_code == 401
    assert "csrf-token" not in r.text and "app.js" not in r.text
    assert r.headers["content-security-policy"] == CSP


@pytest.mark.parametrize(("method", "path"), PROTECTED)
def test_wrong_token_is_refused_everywhere(client: TestClient, method: str, path: str):
    sep = "&" if "?" in path else "?"
    assert client.request(method, f"{path}{sep}token=wrong").status_code == 403
    assert client.request(method, path, headers={"Authorization": "Bearer wrong"}).status_code == 403
    client.cookies.set(cookie_names(TOKEN)[0], "wrong")
    assert client.request(method, path).status_code == 403
    client.cookies.set(cookie_names(TOKEN)[0], TOKEN[:-1])  # a prefix is not the token
    assert client.request(method, path).status_code == 403


def test_token_query_sets_strict_httponly_cookie(client: TestClient):
    r = client.get("/", params={"token": TOKEN})
    auth_cookie = next(c for c in r.headers.get_list("set-cookie") if c.startswith(cookie_names(TOKEN)[0]))
    assert "HttpOnly" in auth_cookie and "SameSite=Strict" in auth_cookie
    # the cookie alone now opens pages, API and static files
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/api/next", params={"annotator": "a"}).status_code == 200
    bearer = TestClient(client.app, base_url="http://127.0.0.1")
    assert bearer.get("/", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200


def test_security_headers_on_page_api_and_static(client: TestClient):
    login(client)
    for path in ("/", "/api/next?annotator=a", "/static/app.css"):
        r = client.get(path)
        assert r.headers["content-security-policy"] == CSP
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["x-frame-options"] == "DENY"


def test_static_serves_only_package_files(client: TestClient):
    login(client)
    assert client.get("/static/app.js").text == (HERE / "static" / "app.js").read_text()
    for path in ("/static/../db.py", "/static/%2e%2e/db.py", "/static/..%2fdb.py", "/static/%2fetc%2fpasswd"):
        r = client.get(path)
        assert r.status_code == 404, path
        assert "LabelStore" not in r.text and "root:" not in r.text


def test_csrf_missing_or_wrong_is_403(client: TestClient, db: Path):
    csrf = login(client)
    body = {"prompt_id": "q1", "annotator": "alice", "ranking": [0, 1, 2, 3]}
    nonce, sig = csrf.rsplit(".", 1)
    forged_sig = f"{nonce}.{'0' * len(sig)}"
    other_session = login(TestClient(client.app, base_url="http://127.0.0.1"))  # valid, not ours
    other_server = login(TestClient(create_app(db, TOKEN), base_url="http://127.0.0.1"))
    for bad in (None, "", "garbage", forged_sig, other_session, other_server):
        assert rank(client, bad, **body).status_code == 403, bad
        # even a malformed body is refused for CSRF before it is parsed
        headers = {} if bad is None else {"X-CSRF-Token": bad}
        assert client.post("/api/skip", content=b"{not json", headers=headers).status_code == 403
    assert export_rows(LabelStore(db)) == []
    assert rank(client, csrf, **body).status_code == 200


def test_xss_payloads_are_inert(client: TestClient):
    # The page is a shell: model output never enters the HTML; the API delivers it as JSON
    # strings, which app.js renders with textContent only.
    page = client.get("/", params={"token": TOKEN}).text
    assert XSS_SCRIPT not in page and "onerror" not in page
    r = client.get("/api/next", params={"annotator": "alice"})
    assert r.headers["content-type"] == "application/json"
    texts = {resp["text"] for resp in r.json()["item"]["responses"]}
    assert {XSS_SCRIPT, XSS_IMG} <= texts
    js = (HERE / "static" / "app.js").read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "Function("):
        assert sink not in js
    assert 'querySelector(".text").textContent = response.text' in js
    assert '$("prompt").textContent = data.item.prompt' in js
    assert not re.search(r"<script>(?!\s*</script>)|\son\w+=", page)  # no inline scripts / handlers


def test_templates_autoescape():
    html = template_env().get_template("index.html").render(csrf_token='"><script>x</script>', total=1)
    assert "<script>x</script>" not in html and "&#34;&gt;&lt;script&gt;" in html


def test_sql_injection_strings_stored_verbatim(client: TestClient, db: Path):
    csrf = login(client)
    assert rank(client, csrf, prompt_id="q2", annotator=SQLI, ranking=[2, 0, 1]).status_code == 200
    assert client.get("/api/next", params={"annotator": SQLI}).json()["item"]["id"] == "q1"
    (row,) = export_rows(LabelStore(db))
    assert row["annotator"] == SQLI and row["responses"][2] == SQLI and row["ranking"] == [2, 0, 1]
    con = sqlite3.connect(db)
    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert tables == {"schema_version", "prompts", "responses", "rankings"}
    assert con.execute("SELECT COUNT(*) FROM rankings").fetchone()[0] == 1
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_oversized_body_is_413(client: TestClient, db: Path):
    csrf = login(client)
    body = json.dumps({"prompt_id": "q1", "annotator": "a" * 70_000, "ranking": [0, 1, 2, 3]}).encode()
    headers = {"X-CSRF-Token": csrf, "Content-Type": "application/json"}
    assert client.post("/api/rank", content=body, headers=headers).status_code == 413

    def chunks():  # no Content-Length: sent chunked, counted as it streams
        for i in range(0, len(body), 8192):
            yield body[i : i + 8192]

    r = client.post("/api/rank", content=chunks(), headers=headers)
    assert r.status_code == 413 and "content-length" not in {k.lower() for k in r.request.headers}
    lying = {**headers, "Content-Length": "abc"}
    assert client.post("/api/rank", content=b"{}", headers=lying).status_code == 413
    assert export_rows(LabelStore(db)) == []


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"prompt_id": "q1", "annotator": "a", "ranking": [0, 1, 2]}, r"responses \[3\] are not ranked"),
        ({"prompt_id": "q1", "annotator": "a", "ranking": [0, 0, 1, 2, 3]}, "appears twice"),
        ({"prompt_id": "q1", "annotator": "a", "ranking": [0, 1, 2, 7]}, "not a response index"),
        ({"prompt_id": "q2", "annotator": "a", "ranking": [0, 1, 2, 3]}, "not a response index 0..2"),
        ({"prompt_id": "nope", "annotator": "a", "ranking": [0, 1]}, "unknown prompt id 'nope'"),
        ({"prompt_id": "q1", "annotator": "  ", "ranking": [0, 1, 2, 3]}, "annotator name"),
        ({"prompt_id": "q1", "annotator": "a\x00b", "ranking": [0, 1, 2, 3]}, "annotator name"),
        ({"prompt_id": "q1", "annotator": "a"}, "ranking"),
        ({"prompt_id": 1, "annotator": "a", "ranking": [0, 1, 2, 3]}, "prompt_id"),
        ([1, 2], "invalid submission"),
    ],
)
def test_invalid_submissions_are_422(client: TestClient, db: Path, body: object, message: str):
    csrf = login(client)
    r = client.post("/api/rank", json=body, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 422
    assert re.search(message, r.json()["detail"])
    assert export_rows(LabelStore(db)) == []


def test_second_submission_is_409_and_skip_is_final(client: TestClient, db: Path):
    csrf = login(client)
    first = rank(client, csrf, prompt_id="q1", annotator="alice", ranking=[[3, 2], 0, 1])
    assert first.status_code == 200 and first.json()["ranking"] == [[2, 3], 0, 1]
    assert rank(client, csrf, prompt_id="q1", annotator="alice", ranking=[0, 1, 2, 3]).status_code == 409
    skip = client.post(
        "/api/skip", json={"prompt_id": "q2", "annotator": "alice"}, headers={"X-CSRF-Token": csrf}
    )
    assert skip.status_code == 200
    assert skip.json()["progress"] == {"ranked": 1, "skipped": 1, "total": 2}
    assert rank(client, csrf, prompt_id="q2", annotator="alice", ranking=[0, 1, 2]).status_code == 409
    assert client.get("/api/next", params={"annotator": "alice"}).json() == {
        "done": True,
        "item": None,
        "progress": {"ranked": 1, "skipped": 1, "total": 2},
    }
    rows = export_rows(LabelStore(db))
    assert [(r["id"], r["annotator"], r["ranking"]) for r in rows] == [("q1", "alice", [[2, 3], 0, 1])]


def test_shuffle_is_per_annotator_and_stable(tmp_path: Path):
    rows = [{"id": f"p{i}", "prompt": f"q{i}", "responses": [f"r{j}" for j in range(4)]} for i in range(8)]
    db = tmp_path / "s.sqlite"
    import_responses(LabelStore(db), str(write_jsonl(tmp_path / "s.jsonl", rows)))
    client = TestClient(create_app(db, TOKEN), base_url="http://127.0.0.1")
    login(client)
    item = client.get("/api/next", params={"annotator": "alice"}).json()["item"]
    assert [r["text"] for r in item["responses"]] == [f"r{i}" for i in display_order("alice", "p0", 4)]
    assert client.get("/api/next", params={"annotator": "alice"}).json()["item"] == item  # reload
    orders = {who: [display_order(who, f"p{i}", 4) for i in range(8)] for who in ("alice", "bob")}
    assert orders["alice"] != orders["bob"]
    assert any(o != [0, 1, 2, 3] for o in orders["alice"])
    assert all(sorted(o) == [0, 1, 2, 3] for o in orders["alice"] + orders["bob"])

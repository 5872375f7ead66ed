"""Hostile callers and hostile inputs: every case gets its exact 4xx and queues nothing."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway.store import JobQuery
from tests.conftest import TEST_SECRET, Gateway, GatewayFactory
from tests.live import free_port
from tests.support import submit
from worker_sdk import FetchError, UrlPolicy, UrlRefused, fetch
from worker_sdk.wire import Topology

pytestmark = pytest.mark.integration


async def queued(gateway: Gateway, service: str = "echo") -> int:
    topology = Topology(gateway.runtime.settings.namespace)
    return await gateway.runtime.broker.queue_depth(topology.task_queue(service))


def claims(**extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": "mallory", "iat": now, "exp": now + 300, **extra}


def hs(payload: dict[str, Any], key: str | bytes = TEST_SECRET, alg: str = "HS256") -> str:
    return jwt.encode(payload, key, algorithm=alg)


def _segment(value: dict[str, Any]) -> str:
    """A token's segment as any client may write it: JSON, UTF-8, base64url."""
    raw = json.dumps(value, ensure_ascii=False).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


async def refused(gateway: Gateway, authorization: str | None) -> httpx.Response:
    headers = {"Authorization": authorization} if authorization is not None else {}
    async with httpx.AsyncClient(transport=gateway.transport, base_url="http://gw.test") as client:
        response = await client.post(
            "/processes/echo/execution", json={"inputs": {}}, headers=headers
        )
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"].startswith('Bearer realm="service-gateway"')
    assert response.json()["code"] == "unauthorized"
    assert await queued(gateway) == 0
    return response


class TestTokens:
    async def test_no_token(self, gateway: Gateway) -> None:
        await refused(gateway, None)
        await refused(gateway, "")
        await refused(gateway, "Bearer ")

    async def test_alg_none(self, gateway: Gateway) -> None:
        unsigned = jwt.encode(claims(), None, algorithm="none")
        await refused(gateway, f"Bearer {unsigned}")

    async def test_expired(self, gateway: Gateway) -> None:
        past = int(time.time()) - 3600
        await refused(gateway, f"Bearer {hs(claims(iat=past - 60, exp=past))}")

    async def test_not_yet_valid(self, gateway: Gateway) -> None:
        await refused(gateway, f"Bearer {hs(claims(nbf=int(time.time()) + 3600))}")

    async def test_without_exp(self, gateway: Gateway) -> None:
        await refused(gateway, f"Bearer {hs({'sub': 'mallory'})}")

    async def test_tampered_signature(self, gateway: Gateway) -> None:
        header, payload, signature = hs(claims()).split(".")
        forged = (
            base64.urlsafe_b64encode(json.dumps(claims(sub="alice")).encode()).rstrip(b"=").decode()
        )
        await refused(gateway, f"Bearer {header}.{forged}.{signature}")
        await refused(gateway, f"Bearer {header}.{payload}.{signature[:-4]}AAAA")

    async def test_wrong_secret_and_wrong_algorithm(self, gateway: Gateway) -> None:
        await refused(gateway, f"Bearer {hs(claims(), key='another-secret-' * 5)}")
        await refused(gateway, f"Bearer {hs(claims(), alg='HS512')}")  # not in the allow-list

    async def test_oversized(self, gateway: Gateway) -> None:
        await refused(gateway, f"Bearer {hs(claims(padding='x' * 9000))}")

    @pytest.mark.parametrize(
        "extension", ["€", "a\nb", "x\r\nSet-Cookie: a=b", 'q"\\', "x" * 1_000]
    )
    async def test_a_tokens_own_text_in_the_challenge_is_sent_as_printable_ascii(
        self, gateway: Gateway, extension: str
    ) -> None:
        """PyJWT names an unknown critical extension in its error, before any signature is
        checked: the challenge's error_description carries what a header can (RFC 6750), the
        problem document the whole."""
        header = _segment({"alg": "HS256", "typ": "JWT", "crit": [extension]})
        token = f"{header}.{_segment(claims())}.c2ln"
        response = await refused(gateway, f"Bearer {token}")
        challenge = response.headers["www-authenticate"]
        description = challenge.split('error_description="', 1)[1]
        assert description.endswith('"')
        assert all(" " <= c <= "~" and c not in '"\\' for c in description[:-1])
        assert len(description) <= 201
        assert extension[:20] in response.json()["detail"]

    async def test_garbage_and_other_schemes(self, gateway: Gateway) -> None:
        await refused(gateway, "Bearer not.a.token")
        await refused(gateway, "Basic YWxpY2U6c2VjcmV0")

    async def test_claims_no_store_or_clock_holds_are_refused(self, gateway: Gateway) -> None:
        """Validly signed, yet a sub that is no valid Unicode (no store keeps it as an owner:
        503 before) or an exp past any date (a 500 on every route before), or a string."""
        await refused(gateway, f"Bearer {hs(claims(sub=chr(0xD800)))}")
        await refused(gateway, f"Bearer {hs(claims(exp=10**400))}")
        await refused(gateway, f"Bearer {hs(claims(exp=int(time.time()) + 10**12))}")
        await refused(gateway, f"Bearer {hs(claims(exp=str(int(time.time()) + 300)))}")

    async def test_missing_sub_is_refused_without_the_legacy_setting(
        self, gateway: Gateway
    ) -> None:
        payload = claims()
        del payload["sub"]
        await refused(gateway, f"Bearer {hs(payload)}")

    async def test_the_raw_header_of_the_old_gateway_is_accepted(self, gateway: Gateway) -> None:
        response = await gateway.client.post(
            "/processes/echo/execution",
            json={"inputs": {}},
            headers={"Authorization": hs(claims(sub="alice"))},
        )
        assert response.status_code == 201
        assert await queued(gateway) == 1


class TestAudienceAndIssuer:
    @pytest.fixture
    async def gateway(self, gateway_factory: GatewayFactory) -> Gateway:
        return await gateway_factory(jwt_audience="sg-prod", jwt_issuer="https://idp.test")

    async def test_wrong_or_missing_audience_and_issuer(self, gateway: Gateway) -> None:
        good = {"aud": "sg-prod", "iss": "https://idp.test"}
        await refused(gateway, f"Bearer {hs(claims(**{**good, 'aud': 'other'}))}")
        await refused(gateway, f"Bearer {hs(claims(iss='https://idp.test'))}")
        await refused(gateway, f"Bearer {hs(claims(**{**good, 'iss': 'https://evil.test'}))}")
        await refused(gateway, f"Bearer {hs(claims(aud='sg-prod'))}")
        async with gateway.as_user("alice") as client:  # minted with the configured aud/iss
            assert (await submit(client, "echo", {})).status_code == 201


class TestLegacyTokens:
    OLD_KEY = base64.b64encode(b"the-old-gateway-signature-key-" + b"0123456789" * 4).decode()

    @pytest.fixture
    async def gateway(self, gateway_factory: GatewayFactory) -> Gateway:
        return await gateway_factory(
            jwt_secret=self.OLD_KEY,
            jwt_secret_base64=True,
            jwt_algorithms=("HS512",),
            jwt_audience="vlbTest",
            legacy_tokens=True,
            legacy_owner="vesta",
        )

    async def test_an_old_style_token_in_a_raw_header_submits_as_the_legacy_owner(
        self, gateway: Gateway
    ) -> None:
        old = jwt.encode(
            {"aud": "vlbTest", "exp": int(time.time()) + 600},
            base64.b64decode(self.OLD_KEY),
            algorithm="HS512",
        )
        async with httpx.AsyncClient(
            transport=gateway.transport,
            base_url="http://gw.test",
            headers={"Authorization": old},
        ) as client:
            job = (await submit(client, "echo", {})).json()
            assert (await client.get(f"/jobs/{job['jobID']}")).status_code == 200
        record = await gateway.runtime.store.get(__import__("uuid").UUID(job["jobID"]))
        assert record is not None
        assert record.owner == "vesta"


@pytest.fixture(scope="module")
def rsa_keys() -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


class TestAsymmetricKeys:
    @pytest.fixture
    async def gateway(self, gateway_factory: GatewayFactory, rsa_keys: tuple[str, str]) -> Gateway:
        return await gateway_factory(
            jwt_secret=None, jwt_algorithms=("RS256",), jwt_public_key=rsa_keys[1]
        )

    async def test_rs256_tokens_are_accepted(
        self, gateway: Gateway, rsa_keys: tuple[str, str]
    ) -> None:
        token = jwt.encode(claims(sub="alice"), rsa_keys[0], algorithm="RS256")
        response = await gateway.client.post(
            "/processes/echo/execution",
            json={"inputs": {}},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert response.status_code == 201

    async def test_the_public_key_used_as_an_hmac_secret_is_refused(
        self, gateway: Gateway, rsa_keys: tuple[str, str]
    ) -> None:
        # The classic confusion: sign HS256 with the public key the server verifies RS256 with.
        header = {"alg": "HS256", "typ": "JWT"}
        segments = [
            base64.urlsafe_b64encode(json.dumps(part).encode()).rstrip(b"=")
            for part in (header, claims())
        ]
        import hashlib
        import hmac

        signing_input = b".".join(segments)
        signature = hmac.new(rsa_keys[1].encode(), signing_input, hashlib.sha256).digest()
        token = (signing_input + b"." + base64.urlsafe_b64encode(signature).rstrip(b"=")).decode()
        await refused(gateway, f"Bearer {token}")
        await refused(gateway, f"Bearer {hs(claims())}")


@pytest.fixture
def jwks_server(rsa_keys: tuple[str, str]) -> Iterator[str]:
    public = serialization.load_pem_public_key(rsa_keys[1].encode())
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(public))  # type: ignore[arg-type]
    body = json.dumps({"keys": [{**jwk, "kid": "k1", "use": "sig", "alg": "RS256"}]}).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/jwks.json"
    server.shutdown()
    server.server_close()


class TestJwks:
    @pytest.fixture
    async def gateway(self, gateway_factory: GatewayFactory, jwks_server: str) -> Gateway:
        return await gateway_factory(
            jwt_secret=None, jwt_algorithms=("RS256",), jwks_url=jwks_server
        )

    async def test_known_kid_is_accepted_and_unknown_kid_refused(
        self, gateway: Gateway, rsa_keys: tuple[str, str]
    ) -> None:
        good = jwt.encode(claims(), rsa_keys[0], algorithm="RS256", headers={"kid": "k1"})
        response = await gateway.client.post(
            "/processes/echo/execution",
            json={"inputs": {}},
            headers={"Authorization": f"Bearer {good}"},
        )
        assert response.status_code == 201
        assert await queued(gateway) == 1
        bad = jwt.encode(claims(), rsa_keys[0], algorithm="RS256", headers={"kid": "k9"})
        headers = {"Authorization": f"Bearer {bad}"}
        response = await gateway.client.post(
            "/processes/echo/execution", json={"inputs": {}}, headers=headers
        )
        assert response.status_code == 401
        assert await queued(gateway) == 1

    async def test_an_unreachable_jwks_endpoint_is_401_and_nothing_is_recorded(
        self, gateway_factory: GatewayFactory, rsa_keys: tuple[str, str]
    ) -> None:
        gateway = await gateway_factory(
            jwt_secret=None,
            jwt_algorithms=("RS256",),
            jwks_url=f"http://127.0.0.1:{free_port()}/jwks.json",  # nothing listens there
        )
        token = jwt.encode(claims(), rsa_keys[0], algorithm="RS256", headers={"kid": "k1"})
        response = await gateway.client.post(
            "/processes/echo/execution",
            json={"inputs": {}},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert response.status_code == 401, response.text
        assert response.json()["code"] == "unauthorized"
        assert "signing keys cannot be fetched" in response.json()["detail"]
        assert await queued(gateway) == 0
        assert await gateway.runtime.store.page_jobs(JobQuery(owner=None)) == []


class TestOwnership:
    async def test_another_users_job_is_invisible(self, gateway: Gateway) -> None:
        job = (await submit(gateway.client, "echo", {})).json()  # alice's
        async with gateway.as_user("bob") as bob:
            for path in (f"/jobs/{job['jobID']}", f"/jobs/{job['jobID']}/results"):
                response = await bob.get(path)
                assert response.status_code == 404
                assert response.json()["code"] == "no-such-job"
            assert (await bob.get("/jobs")).json()["jobs"] == []
        async with gateway.as_user("root", "sg:admin") as admin:
            assert (await admin.get(f"/jobs/{job['jobID']}")).status_code == 200
            listed = (await admin.get("/jobs")).json()["jobs"]
            assert [j["jobID"] for j in listed] == [job["jobID"]]
        mine = (await gateway.client.get("/jobs")).json()["jobs"]
        assert [j["jobID"] for j in mine] == [job["jobID"]]

    async def test_clients_cannot_set_server_fields(self, gateway: Gateway) -> None:
        response = await gateway.client.post(
            "/processes/echo/execution",
            json={"inputs": {}, "owner": "bob", "status": "successful", "jobID": "x"},
        )
        assert response.status_code == 400
        problem = response.json()
        assert problem["code"] == "invalid-request"
        assert {e["path"] for e in problem["errors"]} == {"body/owner", "body/status", "body/jobID"}
        assert await gateway.runtime.store.page_jobs(JobQuery(owner=None)) == []


class TestScopesAndLimits:
    @pytest.fixture
    def catalogue(self) -> Any:
        from tests.support import TEST_CATALOGUE
        from worker_sdk.wire.catalogue import parse_catalogue

        return parse_catalogue(
            TEST_CATALOGUE + "  guarded:\n    title: G\n    version: '1'\n    scopes: [stats:run]\n"
        )

    async def test_a_service_scope_is_required(self, gateway: Gateway) -> None:
        response = await submit(gateway.client, "guarded", {})
        assert response.status_code == 403
        assert response.json()["code"] == "forbidden"
        assert await queued(gateway, "guarded") == 0
        async with gateway.as_user("alice", "stats:run") as allowed:
            assert (await submit(allowed, "guarded", {})).status_code == 201

    async def test_the_rate_limit_answers_429_with_retry_after(
        self, gateway_factory: GatewayFactory
    ) -> None:
        gateway = await gateway_factory(submit_rate=0.01, submit_burst=2)
        statuses = [(await submit(gateway.client, "echo", {})).status_code for _ in range(3)]
        assert statuses == [201, 201, 429]
        limited = await submit(gateway.client, "echo", {})
        assert int(limited.headers["retry-after"]) >= 1
        assert limited.json()["code"] == "rate-limited"
        assert await queued(gateway) == 2
        async with gateway.as_user("bob") as bob:  # buckets are per owner
            assert (await submit(bob, "echo", {})).status_code == 201

    async def test_the_active_jobs_quota_answers_429(self, gateway_factory: GatewayFactory) -> None:
        gateway = await gateway_factory(max_active_jobs=2)
        statuses = [(await submit(gateway.client, "echo", {})).status_code for _ in range(3)]
        assert statuses == [201, 201, 429]
        assert (await submit(gateway.client, "echo", {})).json()["code"] == "quota-exceeded"
        assert await queued(gateway) == 2
        for accept in ("application/json", "text/html"):  # the old routes' two forms
            old = await gateway.client.post(
                "/echo/process", params={"doc_url": "http://a.org/b"}, headers={"Accept": accept}
            )
            assert old.status_code == 429, old.text
            assert int(old.headers["retry-after"]) >= 1
        assert await queued(gateway) == 2


class TestAuthDisabled:
    async def test_it_is_loud(self, gateway_factory: GatewayFactory) -> None:
        gateway = await gateway_factory(auth_disabled=True, jwt_secret=None)
        ready = (await gateway.client.get("/readyz")).json()
        assert any("disabled" in w for w in ready["warnings"])
        assert (await submit(gateway.client, "echo", {})).status_code == 201


class TestOpenApi:
    async def test_the_bearer_scheme_is_declared(self, gateway: Gateway) -> None:
        spec = (await gateway.client.get("/openapi.json")).json()
        assert spec["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
        execute = spec["paths"]["/processes/{processID}/execution"]["post"]
        assert execute["security"] == [{"bearer": []}]
        assert {"401", "403"} <= set(execute["responses"])


URL_ATTACKS = [
    "http://127.0.0.1/",
    "http://localhost:8080/admin",
    "http://2130706433/",
    "http://0x7f000001/",
    "http://0177.0.0.1/",
    "http://127.1/",
    "http://[::1]/",
    "http://[::ffff:127.0.0.1]/",
    "http://[::127.0.0.1]/",  # IPv4-compatible
    "http://[::ffff:0:a00:5]/",  # SIIT-translated 10.0.0.5
    "http://[64:ff9b::a9fe:a9fe]/",  # 169.254.169.254 through a NAT64 gateway
    "http://[64:ff9b:1::a00:5]/",  # a site's own NAT64 prefix
    "http://[2002:c0a8:101::1]/",  # 192.168.1.1 through 6to4
    "http://169.254.169.254/latest/meta-data/",
    "http://10.0.0.5/",
    "http://192.168.1.1/",
    "http://[fe80::1]/",
    "http://0.0.0.0/",
    "http://224.0.0.1/",
    "file:///etc/passwd",
    "gopher://127.0.0.1:6379/_FLUSHALL",
    "http://user:pass@93.184.216.34/",
    # hosts a decoding parser (pydantic's HttpUrl, a worker's model) reads as another
    "http://%31%32%37.0.0.1/x",  # 127.0.0.1
    "http://%6c%6f%63%61%6c%68%6f%73%74/",  # localhost
    "http://[fe80::1%25eth0]/",  # a zone: a local interface
    # hosts no URL parser takes for a name, which a worker's model would refuse
    "http://999.1.1.1/",
    "http://1.2.3.4.5/",
    "http://example.0x10/",
    "http://[v1.x]/",
    "https://%ff/",
    "http://xn--/",
    "http://" + ".".join(["a" * 60] * 5) + "/",  # 304 characters
    "http://93.184.216.34/\r\nX-Injected: 1",  # a control character anywhere
]


class TestUrlInputs:
    @pytest.fixture
    def catalogue(self) -> Any:
        from tests.conftest import ROOT
        from worker_sdk.wire.catalogue import load_catalogue

        return load_catalogue(ROOT / "services.yaml")

    @pytest.mark.parametrize("url", URL_ATTACKS)
    async def test_the_gateway_refuses_non_public_targets(self, gateway: Gateway, url: str) -> None:
        response = await submit(gateway.client, "textstats", {"url": url})
        assert response.status_code == 422, response.text
        assert response.json()["errors"][0]["path"] == "/inputs/url"
        assert await queued(gateway, "textstats") == 0

    async def test_an_allow_listed_network_passes(self, gateway_factory: GatewayFactory) -> None:
        gateway = await gateway_factory(url_allow_networks=("127.0.0.0/8",))
        response = await submit(gateway.client, "textstats", {"url": "http://127.0.0.1:9/doc"})
        assert response.status_code == 201


class _Redirect(BaseHTTPRequestHandler):
    def __init__(self, target: str, *args: Any) -> None:
        self.target = target
        super().__init__(*args)

    def do_GET(self) -> None:
        if self.path == "/big":
            self.send_response(200)
            self.send_header("content-length", "100000")
            self.end_headers()
            self.wfile.write(b"x" * 100000)
            return
        self.send_response(302)
        self.send_header("location", self.target)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def redirector() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Redirect, "http://localhost:1/secret"))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


class TestWorkerFetch:
    def test_a_name_resolving_to_loopback_is_refused_at_connect_time(self) -> None:
        with pytest.raises(UrlRefused, match="non-public"):
            fetch("http://localhost:1/", policy=UrlPolicy())

    def test_a_redirect_to_a_denied_address_is_refused(self, redirector: int) -> None:
        policy = UrlPolicy(allow_hosts=("127.0.0.1",))  # the first hop is allowed on purpose
        with pytest.raises(UrlRefused, match="localhost"):
            fetch(f"http://127.0.0.1:{redirector}/start", policy=policy)

    def test_size_is_capped(self, redirector: int) -> None:
        policy = UrlPolicy(allow_hosts=("127.0.0.1",))
        with pytest.raises(FetchError, match="more than 1000"):
            fetch(f"http://127.0.0.1:{redirector}/big", policy=policy, max_bytes=1000)
        assert len(fetch(f"http://127.0.0.1:{redirector}/big", policy=policy)) == 100000

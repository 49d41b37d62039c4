"""The multipart envelope, fuzzed against a real server.

Hypothesis generates content types (boundary lengths up to 4,000 characters, quoting,
charset and other parameters, duplicates, control characters), part headers (missing or
duplicated Content-Disposition, odd filenames and encodings, huge header blocks) and bodies
(truncated anywhere, garbage interleaved, preamble and epilogue), sends them byte for byte
over a raw socket to `python -m service`, and requires every answer to be a documented 4xx
with the JSON error body, within a time bound, leaving no spool file and no child process.

Seeded (derandomized) by default so CI is reproducible; `EMOTION_FUZZ_PROFILE=nightly` runs
ten times as many cases from a random seed (`EMOTION_FUZZ_SEED=N` to replay one), and
`EMOTION_FUZZ_EXAMPLES=N` sets the number of cases per property directly.
"""
from __future__ import annotations

import os
import random
import socket
import time

import httpx
import pytest
from conftest import running_server
from hypothesis import HealthCheck, event, given, seed, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument
from rawhttp import Answer, exchange, request_bytes

pytestmark = pytest.mark.slow

# Every status and code an envelope may get (docs/http-api.md's errors table). The file parts carry
# payloads that are refused quickly and never decode (a playlist, nothing, a few random bytes).
DOCUMENTED = {
    400: {"bad_request", "malformed_multipart", "empty_file", "undecodable", "no_usable_stream", "no_duration"},
    413: {"upload_too_large"},
    415: {"not_multipart", "unsupported_container", "playlist_refused"},
    422: {"unexpected_fields", "missing_file", "invalid_parameters"},
}
ANSWER_WITHIN_S = 15.0
UPLOAD_LIMIT_MB = 1

_PROFILE = os.environ.get("EMOTION_FUZZ_PROFILE", "ci")
_EXAMPLES = int(os.environ.get("EMOTION_FUZZ_EXAMPLES", "0")) or (20000 if _PROFILE == "nightly" else 1500)
_SEED = os.environ.get("EMOTION_FUZZ_SEED")
FUZZ = settings(
    max_examples=_EXAMPLES, deadline=None, database=None, derandomize=_PROFILE != "nightly" and not _SEED,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    print_blob=True,
)


def seeded(test):
    return seed(int(_SEED))(test) if _SEED else test


@pytest.fixture(scope="module")
def fuzz_server(quick_bundle):
    env = {"EMOTION_MAX_UPLOAD_MB": str(UPLOAD_LIMIT_MB), "EMOTION_UPLOAD_TIMEOUT_S": "5",
           "EMOTION_MAX_QUEUE": "64", "EMOTION_DECODE_TIMEOUT_S": "10"}
    with running_server(quick_bundle, env) as srv:
        yield srv


def check(server, answer: Answer, what: bytes) -> None:
    """A documented 4xx with the JSON error body, in time, nothing left behind."""
    ctx = what[:300]
    assert answer.status in DOCUMENTED, (answer.status, answer.body[:300], ctx)
    assert answer.headers.get("content-type", "").startswith("application/json"), (answer.headers, ctx)
    err = answer.json()["error"]
    note(f"{answer.status} {err['code']}")
    assert err["code"] in DOCUMENTED[answer.status], (answer.status, err, ctx)
    assert err["message"] and err["request_id"] == answer.headers.get("x-request-id"), (err, answer.headers)
    assert answer.seconds < ANSWER_WITHIN_S, (answer.seconds, ctx)
    assert "Traceback" not in answer.body.decode("latin-1")
    assert_clean(server)


def note(what: str) -> None:
    """The spread of answers, shown by --hypothesis-show-statistics (outside a property: nothing)."""
    try:
        event(what)
    except InvalidArgument:
        pass


def assert_clean(server, wait_s: float = 5.0) -> None:
    """No spool directory and no ffmpeg child (reaping is quick, give it a moment)."""
    deadline = time.monotonic() + wait_s
    while True:
        left, children = list(server.tmp.iterdir()), server.children()
        if not left and not children:
            return
        assert time.monotonic() < deadline, (left, children)
        time.sleep(0.02)


def post(server, ctype: bytes | None, body: bytes, extra: list[tuple[bytes, bytes]] = (),
         content_length: int | None = None) -> Answer:
    headers = ([(b"Content-Type", ctype)] if ctype is not None else []) + list(extra)
    return exchange(server.port, request_bytes("POST", "/predict", headers, body, content_length),
                    timeout=ANSWER_WITHIN_S + 5)


# ---------------------------------------------------------------- strategies
# Hypothesis draws 0 (the simplest value) far more often than uniformly: `st.integers(0, N)`
# branches put the common, well-formed path at 0 and the rare one at N.

BCHARS = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ'()+_,-./:=? "
ODD = "\"\\;=\t\x00\x01\x0b\x1f\x7f\xa0\xe9\xff"

boundaries = st.one_of(
    st.integers(1, 70).map(lambda n: "b" * n),
    st.sampled_from([0, 1, 69, 70, 71, 255, 256, 257, 1000, 4000, 8000]).map(lambda n: "x" * n),
    st.text(BCHARS, min_size=1, max_size=80),
    st.text(BCHARS + ODD, min_size=0, max_size=40),
)


@st.composite
def content_types(draw, boundary: str) -> bytes:
    """A Content-Type header value around `boundary` (the one the body will use), or not."""
    if draw(st.integers(0, 9)) < 7:   # mostly the right type: the parser is what is under test
        media = draw(st.sampled_from(["multipart/form-data", "MULTIPART/Form-Data", " multipart/form-data",
                                      "multipart/form-data "]))
    else:
        media = draw(st.sampled_from(["multipart/mixed", "multipart/", "form-data", "text/plain", "",
                                      "application/octet-stream", "multipart/form-data\x00", "*/*"]))
    quote = draw(st.sampled_from(["", '"', "'"]))
    params = [f"boundary={quote}{boundary}{quote}"]
    for extra in draw(st.lists(st.sampled_from([
        "charset=utf-8", "charset=latin-1", "charset=\"\"", "charset", "boundary=other", "boundary=",
        'boundary=""', "boundary*=utf-8''x", "name=file", "=", ";", "a=b=c", "q=0.5", "x=" + "y" * 2000,
        "\x01=\x02", "BOUNDARY=" + boundary,
    ]), max_size=draw(st.sampled_from([0, 0, 3])))):
        params.insert(draw(st.integers(0, len(params))), extra)
    if draw(st.booleans()) and len(params) > 1:
        params = params[::-1]
    sep = draw(st.sampled_from(["; ", "; ", "; ", ";", " ; ", ";;", ";\t", ","]))
    value = media + sep + sep.join(params) if draw(st.integers(0, 9)) != 9 else media
    return value.encode("latin-1", "replace")


FILENAMES = st.one_of(
    st.sampled_from(["a.mp4", "", "../../etc/passwd", "C:\\x\\y.mp4", "\\\\srv\\share\\v.mp4", "a\"b.mp4",
                     "a\\\".mp4", "vid\x00eo.mp4", ".", "/", "CON", "a;b=c.mp4", "\u00e9t\u00e9.mp4",
                     "\u65e5\u672c.mp4", "\U0001f600.mp4", "x" * 10_000]),
    st.text(max_size=30),
)


@st.composite
def dispositions(draw) -> bytes:
    name = draw(st.sampled_from(["file", "file", "file", "FILE", "video", "", "file\x00", "fi le"]))
    kind = draw(st.sampled_from(["form-data", "form-data", "attachment", "inline", "", "FORM-DATA"]))
    parts = [kind]
    quote = draw(st.sampled_from(['"', '"', ""]))
    if draw(st.integers(0, 9)) != 9:
        parts.append(f"name={quote}{name}{quote}")
    fn = draw(st.one_of(FILENAMES, st.none()))
    if fn is not None:
        enc = draw(st.sampled_from(["utf-8", "latin-1", "star", "raw-bytes"]))
        if enc == "star":
            parts.append("filename*=UTF-8''" + fn.encode("utf-8", "surrogatepass").hex())
        else:
            parts.append(f"filename={quote}{fn}{quote}")
        if enc == "raw-bytes":
            return "; ".join(parts).encode("utf-8", "surrogatepass") + bytes(draw(st.binary(max_size=8)))
        return "; ".join(parts).encode(enc if enc != "star" else "utf-8", "replace")
    return "; ".join(parts).encode("utf-8", "surrogatepass")


PAYLOADS = st.one_of(
    st.just(b"#EXTM3U\n#EXTINF:1,\nx.ts\n"),                  # playlist_refused: no ffprobe, quick
    st.just(b"#EXTM3U\n" + b"\r\n--" * 50),                    # boundary-like bytes in the data
    st.just(b""),
    st.binary(min_size=1, max_size=64).map(lambda b: b"#EXTM3U" + b),
    st.binary(max_size=256),                                   # undecodable (ffprobe) or empty
)


@st.composite
def parts(draw) -> bytes:
    """One part: its header block (maybe huge, maybe without/with two dispositions) and data."""
    headers: list[bytes] = []
    n_disp = draw(st.sampled_from([1, 1, 1, 1, 0, 2]))
    for _ in range(n_disp):
        headers.append(b"Content-Disposition: " + draw(dispositions()))
    extra = draw(st.lists(st.sampled_from([
        b"Content-Type: video/mp4", b"Content-Type: ", b"Content-Transfer-Encoding: base64",
        b"X-Pad: " + b"p" * 70_000, b"X-Many: 1", b"NoColon", b": no name", b"Content-Length: 99999999",
        b"Content-Disposition:", b" folded continuation", b"X-\x00: nul", b"\xff\xfe: bom",
    ]), max_size=3))
    for h in extra:
        headers.insert(draw(st.integers(0, len(headers))), h)
    if draw(st.integers(0, 30)) == 30:
        headers += [b"X-Many: %d" % i for i in range(3000)]   # a header block of thousands of lines
    eol = draw(st.sampled_from([b"\r\n", b"\r\n", b"\r\n", b"\n"]))
    return eol.join(headers) + eol + eol + draw(PAYLOADS)


@st.composite
def file_part(draw) -> bytes:
    """A proper `file` part: odd file names and payloads, nothing else wrong."""
    fn = draw(FILENAMES).replace("\\", "\\\\").replace('"', '\\"')
    head = f'Content-Disposition: form-data; name="file"; filename="{fn}"'.encode("utf-8", "surrogatepass")
    ctype = draw(st.sampled_from([b"", b"\r\nContent-Type: video/mp4", b"\r\nContent-Type: application/octet-stream"]))
    return head + ctype + b"\r\n\r\n" + draw(PAYLOADS)


@st.composite
def envelopes(draw) -> tuple[bytes, bytes]:
    """(Content-Type, body): a multipart message, then (mostly) mangled."""
    clean = draw(st.integers(0, 9)) < 3    # well-formed but for what the parts hold
    boundary = draw(st.text(BCHARS.strip(), min_size=1, max_size=70)) if clean else draw(boundaries)
    ctype = draw(content_types(boundary))
    b = boundary.encode("latin-1", "replace")
    if not clean and draw(st.integers(0, 5)) == 5:
        b = draw(boundaries).encode("latin-1", "replace")   # the body uses another boundary
    preamble = draw(st.sampled_from([b"", b"\r\n"] if clean else
                                    [b"", b"", b"preamble text\r\n", b"\r\n", b"--\r\n", b"\x00" * 10]))
    epilogue = draw(st.sampled_from([b"", b"", b"epilogue\r\n", b"\r\n" * 3, b"--" + b + b"--\r\n"]))
    body = preamble
    chosen = draw(st.lists(parts(), min_size=0, max_size=3))
    if clean:
        chosen = [draw(file_part())] + chosen[:draw(st.sampled_from([0, 0, 0, 1]))]
    for p in chosen:
        body += b"--" + b + b"\r\n" + p + b"\r\n"
    closing = draw(st.sampled_from([b"--" + b + b"--", b"--" + b + b"--\r\n", b"--" + b, b"", b"--" + b + b"-"]))
    body += (b"--" + b + b"--\r\n" if clean else closing) + epilogue
    # mangle: truncate, cut a piece out, splice garbage in
    for _ in range(0 if clean else draw(st.integers(0, 2))):
        op = draw(st.sampled_from(["truncate", "drop", "garbage", "none"]))
        at = draw(st.integers(0, len(body)))
        if op == "truncate":
            body = body[:at]
        elif op == "drop":
            body = body[:at] + body[at + draw(st.integers(1, 40)):]
        elif op == "garbage":
            body = body[:at] + draw(st.binary(min_size=1, max_size=40)) + body[at:]
    return ctype, body


# ---------------------------------------------------------------- the properties


@seeded
@FUZZ
@given(envelope=envelopes())
def test_fuzzed_envelope_is_a_documented_4xx(fuzz_server, envelope):
    ctype, body = envelope
    check(fuzz_server, post(fuzz_server, ctype, body), ctype + b"\n" + body)


@seeded
@FUZZ
@given(ctypes=st.lists(st.binary(max_size=120), min_size=0, max_size=3),
       other=st.lists(st.tuples(st.sampled_from([b"Content-Length", b"Transfer-Encoding", b"Expect", b"X-Request-ID",
                                                  b"Content-Encoding", b"X-\x01"]),
                                st.binary(max_size=40)), max_size=2),
       body=st.binary(max_size=200))
def test_arbitrary_header_bytes_are_a_documented_4xx(fuzz_server, ctypes, other, body):
    """Content-Type header(s) of arbitrary bytes (duplicates, control characters, non-ASCII),
    and other framing headers: refused by the HTTP layer or the application, always as JSON."""
    headers = [(b"Content-Type", c) for c in ctypes] + other
    ans = exchange(fuzz_server.port, request_bytes("POST", "/predict", headers, body), timeout=ANSWER_WITHIN_S + 5)
    if ans.status == 0:
        # A framing header that makes the body unreadable (a lying Content-Length, an
        # Expect: 100-continue) may leave the server waiting for bytes that never come:
        # it must then answer 408 within the upload timeout, which `exchange` waited for.
        pytest.fail(f"no answer within {ANSWER_WITHIN_S + 5} s: {headers!r}")
    if ans.status == 408:
        note("408 upload_timeout")
        assert ans.json()["error"]["code"] == "upload_timeout"
        assert_clean(fuzz_server)
        return
    check(fuzz_server, ans, repr(headers).encode())


def _wellformed(boundary: bytes = b"AaB03x") -> tuple[bytes, bytes]:
    body = (b"--" + boundary + b"\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.mp4\"\r\n"
            b"Content-Type: video/mp4\r\n\r\n#EXTM3U\n#EXTINF:1,\nx.ts\n\r\n--" + boundary + b"--\r\nepilogue")
    return b"multipart/form-data; boundary=" + boundary, body


def test_preamble_is_refused_and_epilogue_ignored(fuzz_server):
    """python-multipart does not skip a preamble (RFC 2046 allows one; no HTTP client sends
    one): a 400, not a 500. A leading CRLF and an epilogue are fine."""
    ctype, body = _wellformed()
    ans = post(fuzz_server, ctype, b"preamble\r\n" + body)
    check(fuzz_server, ans, body)
    assert ans.json()["error"]["code"] == "malformed_multipart"
    for ok in (b"\r\n" + body, body + b"\r\nmore epilogue\r\n--AaB03x--"):
        assert post(fuzz_server, ctype, ok).json()["error"]["code"] == "playlist_refused"


def test_every_truncation_of_a_wellformed_body(fuzz_server):
    """The body cut at every byte (so at every structural point: inside the preamble, the
    delimiter, a header name, a header value, the blank line, the data, the close delimiter)."""
    ctype, body = _wellformed()
    assert post(fuzz_server, ctype, body).status == 415          # the whole one: a playlist
    seen: dict[int, set[str]] = {}
    for n in range(len(body)):
        ans = post(fuzz_server, ctype, body[:n])
        check(fuzz_server, ans, body[:n])
        seen.setdefault(ans.status, set()).add(ans.json()["error"]["code"])
    assert seen[400] == {"malformed_multipart"} and seen[422] == {"missing_file"}, seen


@pytest.mark.parametrize("length", [70, 71, 256, 257, 1000, 4000])
def test_long_boundaries(fuzz_server, length):
    """RFC 2046 allows 70; python-multipart's parser refuses over 256 when it is built
    (once a 500). A well-formed body with any of these is answered, never a 500."""
    ctype, body = _wellformed(b"x" * length)
    ans = post(fuzz_server, ctype, body)
    if length <= 256:
        assert ans.status == 415 and ans.json()["error"]["code"] == "playlist_refused", ans.body
    else:
        check(fuzz_server, ans, ctype)
        assert (ans.status, ans.json()["error"]["code"]) == (400, "malformed_multipart")


@pytest.mark.parametrize("what,status,code", [
    ("nul_in_ctype", 400, "bad_request"),             # h11 refuses NUL (and CR/LF) in a value
    ("ctrl_in_ctype", 400, "malformed_multipart"),    # other control bytes reach the application
    ("boundary_20k", 400, "malformed_multipart"),
    ("many_headers", 415, "playlist_refused"),        # a 25 KB head arriving at once is parsed
    ("head_over_16k_in_pieces", 400, "bad_request"),  # h11's limit on an incomplete head
    ("garbage_request_line", 400, "bad_request"),
])
def test_odd_request_heads_are_json(fuzz_server, what, status, code):
    """What h11 refuses before the application runs is the JSON `bad_request`, not
    uvicorn's plain text; what it lets through is the application's documented 4xx."""
    ctype, body = _wellformed()
    extra: list[tuple[bytes, bytes]] = []
    if what == "boundary_20k":
        ctype, body = _wellformed(b"x" * 20_000)
    elif what == "many_headers":
        extra = [(b"X-Pad-%d" % i, b"y" * 40) for i in range(600)]
    elif what == "ctrl_in_ctype":
        ctype += b"\x01"
    elif what == "nul_in_ctype":
        ctype = ctype.replace(b";", b"\x00;")
    if what == "head_over_16k_in_pieces":
        data = request_bytes("POST", "/predict", [(b"Content-Type", ctype), (b"X-Pad", b"y" * 20_000)], body)
        with socket.create_connection(("127.0.0.1", fuzz_server.port), timeout=10) as s:
            try:
                for i in range(0, 21_000, 1000):
                    s.sendall(data[i:i + 1000])
                    time.sleep(0.01)
            except (BrokenPipeError, ConnectionResetError):
                pass   # answered and closed once past the limit
            raw = s.recv(65536)
        assert raw.startswith(b"HTTP/1.1 400") and b'"bad_request"' in raw, raw[:300]
        assert b"application/json" in raw.lower()
        return
    if what == "garbage_request_line":
        ans = exchange(fuzz_server.port, b"GARBAGE /\x00 nonsense\r\n\r\n")
    else:
        ans = post(fuzz_server, ctype, body, extra)
    check(fuzz_server, ans, ctype[:100])
    assert (ans.status, ans.json()["error"]["code"]) == (status, code)


def test_disconnect_mid_body_leaves_nothing(fuzz_server):
    """A client that declares the whole body, sends part of it and hangs up: no answer is
    possible, nothing may stay behind, and the server carries on."""
    ctype, body = _wellformed()
    rng = random.Random(20)
    for n in sorted(rng.sample(range(len(body)), 25)):
        exchange(fuzz_server.port, request_bytes("POST", "/predict", [(b"Content-Type", ctype)], body[:n], len(body)),
                 close_after_send=True)
    assert_clean(fuzz_server)
    assert httpx.get(fuzz_server.url + "/healthz").status_code == 200


def test_server_is_healthy_after_the_fuzzing(fuzz_server):
    """Runs last in this module: no 500 was ever counted, no error was logged."""
    assert httpx.get(fuzz_server.url + "/readyz").status_code == 200
    metrics = httpx.get(fuzz_server.url + "/metrics").text
    assert 'status="500"' not in metrics
    assert '"level": "error"' not in fuzz_server.logs()
    assert_clean(fuzz_server)

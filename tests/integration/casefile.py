"""casefile.py - reads the request/answer cases of tests/integration/cases/*.cases.

A case file holds cases one after another, in the spirit of curl's tests/data: the request as it
goes on the wire, then the answer expected. Lines starting with '#' are comments.

    == unknown model
    POST /v2/models/nope/infer
    Content-Type: application/json

    {"inputs": []}
    -- 404
    error model 'nope' is not loaded (loaded: ${LOADED})

- `== NAME` starts a case.
- The next line is `METHOD TARGET`, sent as is (the runner adds Host and Connection: close), or
  `METHOD TARGET HTTP/x.y`: a raw request, whose request line and header lines are sent exactly
  as written (escapes expanded, so a line may start with a space or hold \x00), nothing added.
- Header lines follow, `Name: value`, up to a blank line. Content-Length is added from the body
  unless a case gives one or a Transfer-Encoding (not for raw requests).
- The body is every line up to the `--` line, joined without separators, so that a long body can
  be broken anywhere. Escapes: \\\\ \\r \\n \\t \\xHH. Macros: %file[PATH]% (a file of the
  repository), %repeat[N|TEXT]% (TEXT N times), %b64[TEXT]% (TEXT in base64); TEXT may hold
  escapes and macros. A literal '%' is written \\x25.
- `-- STATUS [headers-only]`: the status expected. With `headers-only` the body is not sent (the
  answer must come from the headers alone).
- Then any of: `error MESSAGE` (the exact {"error": ...} message), `error-re REGEX` (a regular
  expression it must match), `header NAME: VALUE` (a header the answer must carry), `closed` (the
  server closes the connection after the answer and sends nothing more: no second answer to bytes
  smuggled after the first request), `answer libmicrohttpd` (the answer is libmicrohttpd's own,
  written before convserve sees the request: only its status is checked).

${NAME} in the target, headers, body and expected texts is replaced by the variables the runner
passes (the models loaded, the limits it started the server with).
"""
import base64
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VAR_RE = re.compile(r"\$\{([A-Z_]+)\}")
MACROS = ("file", "repeat", "b64")


class CaseError(Exception):
    pass


def substitute(text, variables, where):
    def one(m):
        if m.group(1) not in variables:
            raise CaseError("%s: unknown variable ${%s}" % (where, m.group(1)))
        return str(variables[m.group(1)])
    return VAR_RE.sub(one, text)


def expand(text, where):
    """The bytes a body text stands for (escapes and macros)."""
    out, pos = _expand(text, 0, where, top=True)
    return out


def _expand(text, pos, where, top):
    out = bytearray()
    while pos < len(text):
        c = text[pos]
        if not top and text.startswith("]%", pos):
            return bytes(out), pos + 2
        if c == "\\":
            nxt = text[pos + 1:pos + 2]
            simple = {"\\": b"\\", "r": b"\r", "n": b"\n", "t": b"\t"}
            if nxt in simple:
                out += simple[nxt]
                pos += 2
            elif nxt == "x" and re.match(r"[0-9a-fA-F]{2}$", text[pos + 2:pos + 4]):
                out.append(int(text[pos + 2:pos + 4], 16))
                pos += 4
            else:
                raise CaseError("%s: bad escape at %r" % (where, text[pos:pos + 6]))
            continue
        m = re.match(r"%(" + "|".join(MACROS) + r")\[", text[pos:])
        if m:
            name = m.group(1)
            pos += m.end()
            if name == "repeat":
                n = re.match(r"(\d+)\|", text[pos:])
                if not n:
                    raise CaseError("%s: %%repeat needs N| at %r" % (where, text[pos:pos + 20]))
                pos += n.end()
                inner, pos = _expand(text, pos, where, top=False)
                out += inner * int(n.group(1))
            else:
                inner, pos = _expand(text, pos, where, top=False)
                if name == "file":
                    with open(os.path.join(ROOT, inner.decode()), "rb") as f:
                        out += f.read()
                else:
                    out += base64.b64encode(inner)
            continue
        if c == "%" and not top:
            raise CaseError("%s: a literal %% must be written \\x25" % where)
        out += c.encode("utf-8")
        pos += 1
    if not top:
        raise CaseError("%s: a macro is not closed with ]%%" % where)
    return bytes(out), pos


def parse(path, variables):
    """The cases of one file, as dicts: name, method, path, headers [(name, value)], body (bytes),
    raw (the whole request as bytes, for raw cases, else None), send_body, status, error, error_re,
    expect_headers {lowercase name: value}, closed, mhd_answer."""
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    cases = []
    i = 0
    n = len(lines)

    def where():
        return "%s:%d" % (os.path.relpath(path, ROOT), i + 1)

    while i < n:
        line = lines[i]
        if not line.strip() or line.startswith("#"):
            i += 1
            continue
        if not line.startswith("== "):
            raise CaseError("%s: expected '== NAME', got %r" % (where(), line))
        case = {"name": line[3:].strip(), "headers": [], "error": None, "error_re": None,
                "expect_headers": {}, "send_body": True, "raw": None, "closed": False,
                "mhd_answer": False}
        i += 1
        words = lines[i].split(" ")
        if len(words) not in (2, 3):
            raise CaseError("%s: expected 'METHOD TARGET [HTTP/x.y]'" % where())
        case["method"] = words[0]
        case["path"] = substitute(words[1], variables, where())
        raw = [expand(substitute(lines[i], variables, where()), where())] if len(words) == 3 else None
        i += 1
        while i < n and lines[i] and not lines[i].startswith("-- "):
            if raw is not None:
                raw.append(expand(substitute(lines[i], variables, where()), where()))
                i += 1
                continue
            k, sep, v = lines[i].partition(":")
            if not sep:
                raise CaseError("%s: expected a header line, got %r" % (where(), lines[i]))
            case["headers"].append((k, substitute(v.strip(), variables, where())))
            i += 1
        if i < n and not lines[i]:
            i += 1
        body = []
        while i < n and not lines[i].startswith("-- "):
            body.append(lines[i])
            i += 1
        if i == n:
            raise CaseError("%s: case %r has no '-- STATUS' line" % (where(), case["name"]))
        case["body"] = expand(substitute("".join(body), variables, where()), where())
        if raw is not None:
            case["raw"] = b"\r\n".join(raw) + b"\r\n\r\n" + case["body"]
        words = lines[i][3:].split()
        case["status"] = int(words[0])
        case["send_body"] = "headers-only" not in words[1:]
        i += 1
        while i < n and lines[i] and not lines[i].startswith("== "):
            if lines[i].startswith("#"):
                i += 1
                continue
            key, _, rest = lines[i].partition(" ")
            rest = substitute(rest, variables, where())
            if key == "error":
                case["error"] = rest
            elif key == "error-re":
                case["error_re"] = rest
            elif key == "header":
                k, _, v = rest.partition(":")
                case["expect_headers"][k.strip().lower()] = v.strip()
            elif key == "closed":
                case["closed"] = True
            elif key == "answer" and rest == "libmicrohttpd":
                case["mhd_answer"] = True
            else:
                raise CaseError("%s: unknown expectation %r" % (where(), key))
            i += 1
        cases.append(case)
    return cases


def load(folder, variables):
    """Every case of every *.cases file in folder, files in name order."""
    out = []
    for name in sorted(os.listdir(folder)):
        if name.endswith(".cases"):
            out.extend(parse(os.path.join(folder, name), variables))
    return out

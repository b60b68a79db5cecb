"""Prometheus's PromQL lexer (promql/parser/lex.go, v2.53), expression mode only.

A port, state function for state function, so that tokens, their positions and the lexer's
error words are Prometheus's. Positions are indices into the Python string (code points);
`errors.position` turns them into Prometheus's byte-based line:col.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from gateway.golang import go_quote
from gateway.promql import _grammar as g

EOF_RUNE = ""

KEYWORDS: dict[str, int] = {
    "and": g.LAND,
    "or": g.LOR,
    "unless": g.LUNLESS,
    "atan2": g.ATAN2,
    "sum": g.SUM,
    "avg": g.AVG,
    "count": g.COUNT,
    "min": g.MIN,
    "max": g.MAX,
    "group": g.GROUP,
    "stddev": g.STDDEV,
    "stdvar": g.STDVAR,
    "topk": g.TOPK,
    "bottomk": g.BOTTOMK,
    "count_values": g.COUNT_VALUES,
    "quantile": g.QUANTILE,
    "offset": g.OFFSET,
    "by": g.BY,
    "without": g.WITHOUT,
    "on": g.ON,
    "ignoring": g.IGNORING,
    "group_left": g.GROUP_LEFT,
    "group_right": g.GROUP_RIGHT,
    "bool": g.BOOL,
    "start": g.START,
    "end": g.END,
}
_WORD_KEYS = {**KEYWORDS, "inf": g.NUMBER, "nan": g.NUMBER}

# ItemTypeStr: the fixed spelling of a token type, used in error messages.
TYPE_STR: dict[int, str] = {
    g.OPEN_HIST: "{{",
    g.CLOSE_HIST: "}}",
    g.LEFT_PAREN: "(",
    g.RIGHT_PAREN: ")",
    g.LEFT_BRACE: "{",
    g.RIGHT_BRACE: "}",
    g.LEFT_BRACKET: "[",
    g.RIGHT_BRACKET: "]",
    g.COMMA: ",",
    g.EQL: "=",
    g.COLON: ":",
    g.SEMICOLON: ";",
    g.BLANK: "_",
    g.TIMES: "x",
    g.SPACE: "<space>",
    g.SUB: "-",
    g.ADD: "+",
    g.MUL: "*",
    g.MOD: "%",
    g.DIV: "/",
    g.EQLC: "==",
    g.NEQ: "!=",
    g.LTE: "<=",
    g.LSS: "<",
    g.GTE: ">=",
    g.GTR: ">",
    g.EQL_REGEX: "=~",
    g.NEQ_REGEX: "!~",
    g.POW: "^",
    **{typ: word for word, typ in KEYWORDS.items()},
}

_TYPE_DESC = {
    g.ERROR: "error",
    g.EOF: "end of input",
    g.COMMENT: "comment",
    g.IDENTIFIER: "identifier",
    g.METRIC_IDENTIFIER: "metric identifier",
    g.STRING: "string",
    g.NUMBER: "number",
    g.DURATION: "duration",
}


def go_quote_rune(char: str) -> str:
    """Go's %q of a rune: 'x', with escapes."""
    if char == "'":
        return "'\\''"
    if char == '"':
        return "'\"'"
    return "'" + go_quote(char)[1:-1] + "'"


def go_unicode_verb(char: str) -> str:
    """Go's %#U of a rune: U+0078 'x' (just U+0078 when not printable)."""
    if char == EOF_RUNE:
        return "U+FFFFFFFFFFFFFFFF"  # %#U of rune(-1), as Go prints it
    code = ord(char)
    text = f"U+{code:04X}"
    return f"{text} '{char}'" if char.isprintable() else text


@dataclass(slots=True)
class Item:
    typ: int
    pos: int
    val: str

    def __str__(self) -> str:
        typ = self.typ
        if typ == g.EOF:
            return "EOF"
        if typ == g.ERROR:
            return self.val
        if typ in (g.IDENTIFIER, g.METRIC_IDENTIFIER):
            return go_quote(self.val)
        if g.keywordsStart < typ < g.keywordsEnd:
            return f"<{self.val}>"
        if g.operatorsStart < typ < g.operatorsEnd:
            return f"<op:{self.val}>"
        if g.aggregatorsStart < typ < g.aggregatorsEnd:
            return f"<aggr:{self.val}>"
        if len(self.val) > 10:
            # %.10q: the first ten runes, quoted.
            return go_quote(self.val[:10]) + "..."
        return go_quote(self.val)

    def desc(self) -> str:
        if self.typ in TYPE_STR:
            return str(self)
        if self.typ == g.EOF:
            return type_desc(self.typ)
        return f"{type_desc(self.typ)} {self}"

    def end(self) -> int:
        return self.pos + len(self.val)


def type_desc(typ: int) -> str:
    if typ in _TYPE_DESC:
        return _TYPE_DESC[typ]
    return go_quote(TYPE_STR.get(typ, f"<Item {typ}>"))


def is_space(r: str) -> bool:
    return r in " \t\n\r" and r != ""


def is_alpha(r: str) -> bool:
    return r == "_" or ("a" <= r <= "z") or ("A" <= r <= "Z")


def is_digit(r: str) -> bool:
    return "0" <= r <= "9" and r != ""


def is_alnum(r: str) -> bool:
    return is_alpha(r) or is_digit(r)


def is_label(text: str) -> bool:
    return bool(text) and is_alpha(text[0]) and all(is_alnum(c) for c in text[1:])


State = Callable[["Lexer"], "State | None"]


class Lexer:
    __slots__ = (
        "brace_open",
        "bracket_open",
        "got_colon",
        "input",
        "item",
        "paren_depth",
        "pos",
        "scanned",
        "start",
        "state",
        "string_open",
        "width",
    )

    def __init__(self, text: str) -> None:
        self.input = text
        self.state: State | None = lex_statements
        self.pos = 0
        self.start = 0
        self.width = 0
        self.item = Item(g.EOF, 0, "")
        self.scanned = False
        self.paren_depth = 0
        self.brace_open = False
        self.bracket_open = False
        self.got_colon = False
        self.string_open = ""

    def next(self) -> str:
        if self.pos >= len(self.input):
            self.width = 0
            return EOF_RUNE
        r = self.input[self.pos]
        self.width = 1
        self.pos += 1
        return r

    def peek(self) -> str:
        return self.input[self.pos] if self.pos < len(self.input) else EOF_RUNE

    def backup(self) -> None:
        self.pos -= self.width

    def emit(self, typ: int) -> None:
        self.item = Item(typ, self.start, self.input[self.start : self.pos])
        self.start = self.pos
        self.scanned = True

    def ignore(self) -> None:
        self.start = self.pos

    def accept(self, valid: str) -> bool:
        r = self.next()
        if r != EOF_RUNE and r in valid:
            return True
        self.backup()
        return False

    def accept_run(self, valid: str) -> None:
        while True:
            r = self.next()
            if r == EOF_RUNE or r not in valid:
                break
        self.backup()

    def errorf(self, message: str) -> None:
        self.item = Item(g.ERROR, self.start, message)
        self.scanned = True

    def next_item(self) -> Item:
        self.scanned = False
        if self.state is not None:
            while not self.scanned and self.state is not None:
                self.state = self.state(self)
        else:
            self.emit(g.EOF)
        return self.item

    def scan_number(self) -> bool:
        digits = "0123456789"
        if self.accept("0") and self.accept("xX"):
            digits = "0123456789abcdefABCDEF"
        self.accept_run(digits)
        if self.accept("."):
            self.accept_run(digits)
        if self.accept("eE"):
            self.accept("+-")
            self.accept_run("0123456789")
        return not is_alnum(self.peek())


def lex_statements(lx: Lexer) -> State | None:
    if lx.brace_open:
        return lex_inside_braces
    if lx.input.startswith("#", lx.pos):
        return lex_line_comment
    r = lx.next()
    if r == EOF_RUNE:
        if lx.paren_depth != 0:
            lx.errorf("unclosed left parenthesis")
            return None
        if lx.bracket_open:
            lx.errorf("unclosed left bracket")
            return None
        lx.emit(g.EOF)
        return None
    simple = _SIMPLE.get(r)
    if simple is not None:
        lx.emit(simple)
    elif is_space(r):
        return lex_space
    elif r == "=":
        t = lx.peek()
        if t == "=":
            lx.next()
            lx.emit(g.EQLC)
        elif t == "~":
            lx.errorf(f"unexpected character after '=': {go_quote_rune(t)}")
            return None
        else:
            lx.emit(g.EQL)
    elif r == "!":
        t = lx.next()
        if t == "=":
            lx.emit(g.NEQ)
        else:
            lx.errorf(f"unexpected character after '!': {_rune_q(t)}")
            return None
    elif r == "<":
        if lx.peek() == "=":
            lx.next()
            lx.emit(g.LTE)
        else:
            lx.emit(g.LSS)
    elif r == ">":
        if lx.peek() == "=":
            lx.next()
            lx.emit(g.GTE)
        else:
            lx.emit(g.GTR)
    elif is_digit(r) or (r == "." and is_digit(lx.peek())):
        lx.backup()
        return lex_number_or_duration
    elif r in "\"'":
        lx.string_open = r
        return lex_string
    elif r == "`":
        lx.string_open = r
        return lex_raw_string
    elif is_alpha(r) or r == ":":
        if not lx.bracket_open:
            lx.backup()
            return lex_keyword_or_identifier
        if lx.got_colon:
            lx.errorf(f"unexpected colon {go_quote_rune(r)}")
            return None
        lx.emit(g.COLON)
        lx.got_colon = True
    elif r == "(":
        lx.emit(g.LEFT_PAREN)
        lx.paren_depth += 1
    elif r == ")":
        lx.emit(g.RIGHT_PAREN)
        lx.paren_depth -= 1
        if lx.paren_depth < 0:
            lx.errorf(f"unexpected right parenthesis {go_quote_rune(r)}")
            return None
    elif r == "{":
        lx.emit(g.LEFT_BRACE)
        lx.brace_open = True
        return lex_inside_braces
    elif r == "[":
        if lx.bracket_open:
            lx.errorf(f"unexpected left bracket {go_quote_rune(r)}")
            return None
        lx.got_colon = False
        lx.emit(g.LEFT_BRACKET)
        if is_space(lx.peek()):
            skip_spaces(lx)
        lx.bracket_open = True
        return lex_duration
    elif r == "]":
        if not lx.bracket_open:
            lx.errorf(f"unexpected right bracket {go_quote_rune(r)}")
            return None
        lx.emit(g.RIGHT_BRACKET)
        lx.bracket_open = False
    elif r == "@":
        lx.emit(g.AT)
    else:
        lx.errorf(f"unexpected character: {go_quote_rune(r)}")
        return None
    return lex_statements


_SIMPLE = {",": g.COMMA, "*": g.MUL, "/": g.DIV, "%": g.MOD, "+": g.ADD, "-": g.SUB, "^": g.POW}


def _rune_q(r: str) -> str:
    # %q of eof (-1) is Go's replacement-character rune literal.
    return "'�'" if r == EOF_RUNE else go_quote_rune(r)


def lex_inside_braces(lx: Lexer) -> State | None:
    if lx.input.startswith("#", lx.pos):
        return lex_line_comment
    r = lx.next()
    if r == EOF_RUNE:
        lx.errorf("unexpected end of input inside braces")
        return None
    if is_space(r):
        return lex_space
    if is_alpha(r):
        lx.backup()
        return lex_identifier
    if r == ",":
        lx.emit(g.COMMA)
    elif r in "\"'":
        lx.string_open = r
        return lex_string
    elif r == "`":
        lx.string_open = r
        return lex_raw_string
    elif r == "=":
        if lx.next() == "~":
            lx.emit(g.EQL_REGEX)
        else:
            lx.backup()
            lx.emit(g.EQL)
    elif r == "!":
        nr = lx.next()
        if nr == "~":
            lx.emit(g.NEQ_REGEX)
        elif nr == "=":
            lx.emit(g.NEQ)
        else:
            lx.errorf(f"unexpected character after '!' inside braces: {_rune_q(nr)}")
            return None
    elif r == "{":
        lx.errorf(f"unexpected left brace {go_quote_rune(r)}")
        return None
    elif r == "}":
        lx.emit(g.RIGHT_BRACE)
        lx.brace_open = False
        return lex_statements
    else:
        lx.errorf(f"unexpected character inside braces: {go_quote_rune(r)}")
        return None
    return lex_inside_braces


def _digit_val(ch: str) -> int:
    if "0" <= ch <= "9" and ch:
        return ord(ch) - 48
    if "a" <= ch <= "f":
        return ord(ch) - 87
    if "A" <= ch <= "F":
        return ord(ch) - 55
    return 16


def lex_escape(lx: Lexer) -> State | None:
    ch = lx.next()
    if ch in ("a", "b", "f", "n", "r", "t", "v", "\\") or (ch == lx.string_open and ch):
        return lex_string
    if ch and ch in "01234567":
        n, base, limit = 3, 8, 255
    elif ch == "x":
        ch = lx.next()
        n, base, limit = 2, 16, 255
    elif ch == "u":
        ch = lx.next()
        n, base, limit = 4, 16, 0x10FFFF
    elif ch == "U":
        ch = lx.next()
        n, base, limit = 8, 16, 0x10FFFF
    elif ch == EOF_RUNE:
        lx.errorf("escape sequence not terminated")
        return lex_string
    else:
        lx.errorf(f"unknown escape sequence {go_unicode_verb(ch)}")
        return lex_string
    x = 0
    while n > 0:
        d = _digit_val(ch)
        if d >= base:
            if ch == EOF_RUNE:
                lx.errorf("escape sequence not terminated")
                return lex_string
            lx.errorf(f"illegal character {go_unicode_verb(ch)} in escape sequence")
            return lex_string
        x = x * base + d
        n -= 1
        if n > 0:
            ch = lx.next()
    if x > limit or 0xD800 <= x < 0xE000:
        lx.errorf("escape sequence is an invalid Unicode code point")
    return lex_string


def skip_spaces(lx: Lexer) -> None:
    while is_space(lx.peek()):
        lx.next()
    lx.ignore()


def lex_string(lx: Lexer) -> State | None:
    # Skip the plain run at once (a speed trick: long label regexes from Grafana variables are
    # most of a query's bytes; per-character lexing made an 8 KB query cost 3 ms more).
    plain = _STRING_PLAIN[lx.string_open].match(lx.input, lx.pos)
    if plain is not None:
        lx.pos = plain.end()
    while True:
        r = lx.next()
        if r == "\\":
            return lex_escape
        if r == "\ufffd":  # utf8.RuneError, which a literal U+FFFD decodes to as well
            lx.errorf("invalid UTF-8 rune")
            return lex_string
        if r == EOF_RUNE or r == "\n":
            lx.errorf("unterminated quoted string")
            return None
        if r == lx.string_open:
            break
    lx.emit(g.STRING)
    return lex_statements


def lex_raw_string(lx: Lexer) -> State | None:
    plain = _RAW_PLAIN.match(lx.input, lx.pos)
    if plain is not None:
        lx.pos = plain.end()
    while True:
        r = lx.next()
        if r == "\ufffd":
            lx.errorf("invalid UTF-8 rune")
            return lex_raw_string
        if r == EOF_RUNE:
            lx.errorf("unterminated raw string")
            return lex_raw_string
        if r == lx.string_open:
            break
    lx.emit(g.STRING)
    return lex_statements


# Runs the state functions consume a character at a time in lex.go, matched at once (the lexer
# is most of a parse's cost: per-character calls made a 324-byte query cost 1.1 ms).
_SPACES = re.compile("[ \t\n\r]*")
_WORD = re.compile("[a-zA-Z0-9_]*")
_METRIC_WORD = re.compile("[a-zA-Z0-9_:]*")
_STRING_PLAIN = {q: re.compile(f"[^\\\\\n\ufffd{q}]+") for q in "\"'"}
_RAW_PLAIN = re.compile("[^`\ufffd]+")


def lex_space(lx: Lexer) -> State | None:
    lx.pos = _SPACES.match(lx.input, lx.pos).end()  # type: ignore[union-attr]  # a space is here: it matches
    lx.ignore()
    return lex_statements


def lex_line_comment(lx: Lexer) -> State | None:
    lx.pos += 1
    r = lx.next()
    while r not in ("\r", "\n") and r != EOF_RUNE:
        r = lx.next()
    lx.backup()
    lx.emit(g.COMMENT)
    return lex_statements


def lex_duration(lx: Lexer) -> State | None:
    if lx.scan_number():
        lx.errorf("missing unit character in duration")
        return None
    if not accept_remaining_duration(lx):
        lx.errorf(f"bad duration syntax: {go_quote(lx.input[lx.start : lx.pos])}")
        return None
    lx.backup()
    lx.emit(g.DURATION)
    return lex_statements


def lex_number_or_duration(lx: Lexer) -> State | None:
    if lx.scan_number():
        lx.emit(g.NUMBER)
        return lex_statements
    if accept_remaining_duration(lx):
        lx.backup()
        lx.emit(g.DURATION)
        return lex_statements
    lx.errorf(f"bad number or duration syntax: {go_quote(lx.input[lx.start : lx.pos])}")
    return None


def accept_remaining_duration(lx: Lexer) -> bool:
    if not lx.accept("smhdwy"):
        return False
    lx.accept("s")
    while lx.accept("0123456789"):
        while lx.accept("0123456789"):
            pass
        if not lx.accept("smhdw"):
            return False
        lx.accept("s")
    return not is_alnum(lx.next())


def lex_identifier(lx: Lexer) -> State | None:
    lx.pos = _WORD.match(lx.input, lx.pos).end()  # type: ignore[union-attr]  # a word char is here: it matches
    lx.emit(g.IDENTIFIER)
    return lex_statements


def lex_keyword_or_identifier(lx: Lexer) -> State | None:
    lx.pos = _METRIC_WORD.match(lx.input, lx.pos).end()  # type: ignore[union-attr]  # as above: it matches
    word = lx.input[lx.start : lx.pos]
    keyword = _WORD_KEYS.get(word.lower())
    if keyword is not None:
        lx.emit(keyword)
    elif ":" not in word:
        lx.emit(g.IDENTIFIER)
    else:
        lx.emit(g.METRIC_IDENTIFIER)
    return lex_statements

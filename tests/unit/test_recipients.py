from __future__ import annotations

import json
from pathlib import Path

import pytest

from config.errors import InputError
from config.schema import Recipient
from producers.recipients import InvalidRow, check_address, read_recipients


def _csv(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "list.csv"
    p.write_text(text, encoding="utf-8")
    return p


def test_csv_rows_numbered_and_variables_kept(tmp_path: Path) -> None:
    p = _csv(tmp_path, "email,name,city\nA@Example.test,Ann,Oslo\n\nb@example.test,Bo,Rome\n")
    rows = list(read_recipients(p))
    assert rows == [Recipient(1, "A@example.test", {"name": "Ann", "city": "Oslo"}),
                    Recipient(2, "b@example.test", {"name": "Bo", "city": "Rome"})]


def test_bad_rows_become_invalid_with_reason(tmp_path: Path) -> None:
    p = _csv(tmp_path, "email,name\nnot-an-address,X\n,Y\nok@example.test\n"
                       "c@example.test,Z\n")
    rows = list(read_recipients(p))
    assert isinstance(rows[0], InvalidRow) and rows[0].row == 1
    assert "bad address" in rows[0].reason
    assert isinstance(rows[1], InvalidRow) and rows[1].reason == "empty email"
    assert isinstance(rows[2], InvalidRow) and "1 fields, the header has 2" in rows[2].reason
    assert rows[3] == Recipient(4, "c@example.test", {"name": "Z"})


def test_crlf_only_matters_in_header_fields(tmp_path: Path) -> None:
    p = _csv(tmp_path, 'email,name,note\na@example.test,"Ann\r\nBcc: x@y.z","line1\nline2"\n')
    as_header = list(read_recipients(p, header_fields=frozenset({"name"})))
    assert isinstance(as_header[0], InvalidRow)
    assert "field 'name' contains CR/LF" in as_header[0].reason
    body_only = list(read_recipients(p, header_fields=frozenset({"other"})))
    assert isinstance(body_only[0], Recipient)
    assert body_only[0].vars["note"] == "line1\nline2"


def test_missing_email_column_is_a_file_error(tmp_path: Path) -> None:
    p = _csv(tmp_path, "mail,name\na@example.test,A\n")
    with pytest.raises(InputError, match=r"list.csv: the CSV has no 'email' column"):
        list(read_recipients(p))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="recipient file not found"):
        read_recipients(tmp_path / "nope.csv")


def test_jsonl(tmp_path: Path) -> None:
    p = tmp_path / "r.jsonl"
    p.write_text(json.dumps({"email": "a@example.test", "n": 1}) + "\n{oops\n[1]\n"
                 + json.dumps({"name": "no email"}) + "\n")
    rows = list(read_recipients(p))
    assert rows[0] == Recipient(1, "a@example.test", {"n": 1})
    assert isinstance(rows[1], InvalidRow) and "line 2: not JSON" in rows[1].reason
    assert isinstance(rows[2], InvalidRow) and "expected a JSON object" in rows[2].reason
    assert isinstance(rows[3], InvalidRow) and rows[3].reason == "empty email"


def test_reader_is_lazy(tmp_path: Path) -> None:
    p = _csv(tmp_path, "email\n" + "".join(f"u{i}@example.test\n" for i in range(1000)))
    it = read_recipients(p)
    first = next(iter(it))
    assert isinstance(first, Recipient) and first.row == 1


@pytest.mark.parametrize("bad", ["a@b", "a b@example.test", "a@example.test\r\n"])
def test_check_address_rejects(bad: str) -> None:
    with pytest.raises(ValueError):
        check_address(bad)


def test_email_column_anywhere_and_variable_order_kept(tmp_path: Path) -> None:
    p = _csv(tmp_path, "name,email,city\nAnn, A@Example.TEST ,Oslo\n")
    [r] = list(read_recipients(p))
    assert r == Recipient(1, "A@example.test", {"name": "Ann", "city": "Oslo"})
    assert isinstance(r, Recipient) and list(r.vars) == ["name", "city"]


def test_repeated_column_names_last_one_wins(tmp_path: Path) -> None:
    p = _csv(tmp_path, "email,name,name,email\nx@example.test,A,B,y@example.test\n")
    assert list(read_recipients(p)) == [Recipient(1, "y@example.test", {"name": "B"})]


def test_one_column_file_blank_lines_and_blank_addresses(tmp_path: Path) -> None:
    p = _csv(tmp_path, 'email\na@example.test\n\n""\n   \nb@example.test\n')
    rows = list(read_recipients(p))
    assert rows[0] == Recipient(1, "a@example.test", {})
    assert rows[1] == InvalidRow(2, "", "empty email")  # spaces only: a row, and invalid
    assert rows[2] == Recipient(3, "b@example.test", {})
    assert len(rows) == 3


def test_header_field_check_with_email_in_the_middle(tmp_path: Path) -> None:
    p = _csv(tmp_path, 'name,email,note\n"A\rB",a@example.test,ok\nC,c@example.test,"x\x00"\n')
    rows = list(read_recipients(p, header_fields=frozenset({"name", "note"})))
    assert isinstance(rows[0], InvalidRow) and rows[0].email == "a@example.test"
    assert rows[0].reason == "field 'name' contains CR/LF and is used in a header"
    assert isinstance(rows[1], InvalidRow) and "field 'note'" in rows[1].reason


def test_invalid_rows_keep_what_the_row_held(tmp_path: Path) -> None:
    p = _csv(tmp_path, "email,n\n Bob@localhost ,1\nPostmaster@Example.TEST,2\n")
    rows = list(read_recipients(p))
    assert rows[0] == InvalidRow(1, "Bob@localhost", "bad address: The part after the "
                                 "@-sign is not valid. It should have a period.")
    assert rows[1] == Recipient(2, "postmaster@example.test", {"n": "2"})


@pytest.mark.parametrize(("raw", "normalized"), [
    ("User@Example.TEST", "User@example.test"),
    # one canonical form: the IDNA (ASCII) domain, whichever form the file had
    ("a@xn--bcher-kva.test", "a@xn--bcher-kva.test"),
    ("a@Bücher.test", "a@xn--bcher-kva.test"),
])
def test_check_address_normalizes(raw: str, normalized: str) -> None:
    assert check_address(raw) == normalized

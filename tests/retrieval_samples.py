"""Real sample files for the retrieval tests, made on the spot: a PDF written
by hand (one page, Helvetica text), a .docx by python-docx, and the rest as
text."""

from __future__ import annotations

import io
import json
import zipfile


def pdf_bytes(lines: list[str]) -> bytes:
    """A valid one-page PDF whose page shows ``lines``."""

    def escape(s: str) -> str:
        return s.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")

    ops = ["BT", "/F1 12 Tf", "14 TL", "72 720 Td"]
    for line in lines:
        ops.append(f"({escape(line)}) Tj T*")
    ops.append("ET")
    stream = "\n".join(ops).encode("latin-1")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for n, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n" % n + body + b"\nendobj\n")
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    for off in offsets:
        out.write(b"%010d 00000 n \n" % off)
    out.write(
        b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n"
        % (len(objects) + 1, xref)
    )
    return out.getvalue()


def docx_bytes(paragraphs: list[str]) -> bytes:
    import docx

    document = docx.Document()
    for p in paragraphs:
        document.add_paragraph(p)
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def docx_bomb_bytes(unpacked: int) -> bytes:
    """A .docx whose document.xml inflates to ``unpacked`` bytes."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        with archive.open("word/document.xml", "w") as member:
            block = b" " * (1024 * 1024)
            for _ in range(unpacked // len(block)):
                member.write(block)
    return out.getvalue()


SAMPLES: dict[str, bytes] = {
    "notes.txt": b"The Zorblax reactor runs on frozen helium.\n",
    "guide.md": b"# Guide\n\nThe **Quintar** bridge opens at dawn.\n",
    "page.html": (
        b"<html><head><title>t</title><style>p{color:red}</style></head>"
        b"<body><p>The Velmora comet returns every 88 years.</p>"
        b"<script>var hidden = 'do not index';</script></body></html>"
    ),
    "data.json": json.dumps({"planet": "Oxtrel", "moons": 7}).encode(),
    "table.csv": b"city,river\nBrindle,Askew\nTolmar,Quen\n",
    "code.py": b"def flux_capacitor():\n    return 'gigawatts: 1.21'\n",
}


def all_samples() -> dict[str, bytes]:
    return {
        **SAMPLES,
        "report.pdf": pdf_bytes(["The Harrowgate treaty was signed in 1642."]),
        "memo.docx": docx_bytes(["Budget memo", "The Pellucid fund holds 40 gold."]),
    }


# A phrase each sample's text must contain once parsed.
EXPECTED = {
    "notes.txt": "Zorblax reactor",
    "guide.md": "Quintar",
    "page.html": "Velmora comet returns every 88 years",
    "data.json": "Oxtrel",
    "table.csv": "city: Brindle; river: Askew",
    "code.py": "flux_capacitor",
    "report.pdf": "Harrowgate treaty",
    "memo.docx": "Pellucid fund holds 40 gold",
}

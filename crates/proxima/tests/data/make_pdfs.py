"""Makes the PDFs of the text-extraction tests (run once; the PDFs are committed):
`report.pdf`, two compressed pages of text, one in a standard font (Helvetica) and one in an
embedded TrueType subset (DejaVu Sans) with accented letters; `scanned.pdf`, one page holding
only an image, as a scanner makes them.

    python3 -m venv venv && venv/bin/pip install reportlab && venv/bin/python make_pdfs.py
"""

from reportlab.lib.pagesizes import A4
from reportlab.lib.utils import ImageReader
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.pdfgen import canvas
from PIL import Image, ImageDraw

pdfmetrics.registerFont(TTFont("DejaVu", "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"))

page = canvas.Canvas("report.pdf", pagesize=A4, pageCompression=1, invariant=1)
page.setFont("Helvetica-Bold", 18)
page.drawString(72, 770, "Proxima Quarterly Report")
page.setFont("Helvetica", 11)
page.drawString(72, 740, "The launch code of project Osprey is falcon-7.")
page.drawString(72, 724, "Revenue grew by 12 percent over the quarter.")
page.showPage()
page.setFont("DejaVu", 11)
page.drawString(72, 770, "Second page: the meeting is in Zürich at the Café Léman.")
page.drawString(72, 754, "Ada Lovelace wrote the first program.")
page.showPage()
page.save()

picture = Image.new("RGB", (120, 40), "white")
ImageDraw.Draw(picture).text((8, 12), "SCANNED", fill="black")
scan = canvas.Canvas("scanned.pdf", pagesize=A4, pageCompression=1, invariant=1)
scan.drawImage(ImageReader(picture), 72, 600, width=360, height=120)
scan.showPage()
scan.save()

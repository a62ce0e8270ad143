#!/usr/bin/env python3
"""Rebuilds SQuAD v1.1 dev (dev-v1.1.json's shape) from the dataset's own explorer pages, for a
machine that cannot download the file but has the pages: explore/1.1/dev/*.html on the gh-pages
branch of rajpurkar/SQuAD-explorer, one page an article, each paragraph with its questions and
ground-truth answers.

    bench/squad-from-explorer.py PAGES_DIR OUT.json

Prints the counts; the official file has 48 articles, 2,067 paragraphs and 10,570 questions.
"""
import html.parser
import json
import pathlib
import sys


class Page(html.parser.HTMLParser):
    """Collects (context, [(id, question, [answers])]) per paragraph of one article page."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.paragraphs = []
        self.field = None  # "context", "question" or "answer" while inside one
        self.text = ""

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        classes = (attrs.get("class") or "").split()
        if tag == "pre":
            self.paragraphs.append({"context": None, "qas": []})
            self.start("context")
        elif "qa-wrap" in classes and self.paragraphs:
            self.paragraphs[-1]["qas"].append({"id": attrs.get("data-id"), "question": None, "answers": []})
        elif "question" in classes:
            self.start("question")
        elif "answer" in classes:
            self.start("answer")

    def start(self, field):
        self.field, self.text = field, ""

    def handle_data(self, data):
        if self.field:
            self.text += data

    def handle_endtag(self, tag):
        if not self.field or tag not in ("pre", "strong", "span"):
            return
        paragraph = self.paragraphs[-1]
        if self.field == "context":
            paragraph["context"] = self.text
        elif self.field == "question":
            paragraph["qas"][-1]["question"] = self.text.strip()
        else:
            qa = paragraph["qas"][-1]
            start = paragraph["context"].find(self.text)
            qa["answers"].append({"text": self.text, "answer_start": start})
        self.field = None


def main():
    pages, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    articles = []
    for page in sorted(pages.glob("*.html")):
        if page.name == "index.html":
            continue
        parser = Page()
        parser.feed(page.read_text(encoding="utf-8"))
        articles.append({"title": page.stem, "paragraphs": parser.paragraphs})
    out.write_text(json.dumps({"version": "1.1", "data": articles}), encoding="utf-8")
    paragraphs = sum(len(a["paragraphs"]) for a in articles)
    questions = sum(len(p["qas"]) for a in articles for p in a["paragraphs"])
    print(f"{len(articles)} articles, {paragraphs} paragraphs, {questions} questions -> {out}")


if __name__ == "__main__":
    main()

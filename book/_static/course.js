// A table wider than the page column scrolls sideways; a scrollbar alone is easy to miss,
// so a line under it says so (the book's browser test checks every such table has one).
document.addEventListener("DOMContentLoaded", () => {
  const boxes = document.querySelectorAll("article .output.text_html, article .pst-scrollable-table-container");
  for (const box of boxes) {
    if (box.querySelector("table") && box.scrollWidth > box.clientWidth + 1) {
      const hint = document.createElement("p");
      hint.className = "scroll-hint";
      hint.textContent = "\u2194 This table is wider than the page: scroll it sideways to see every column.";
      box.after(hint);
    }
  }
});

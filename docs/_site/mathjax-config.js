// MathJax reads this before it loads: typeset only what pymdownx.arithmatex marked as math (\( \) inline,
// \[ \] display), never a dollar sign elsewhere on a page.
window.MathJax = {
  tex: {
    inlineMath: [["\\(", "\\)"]],
    displayMath: [["\\[", "\\]"]],
    processEscapes: true,
    processEnvironments: true,
  },
  options: {
    ignoreHtmlClass: ".*|",
    processHtmlClass: "arithmatex",
  },
};

"""The Jinja environment the pages and emails are rendered with: Jinja's own, compiled to yield less.

Jinja compiles a template's text and values as one `yield` each, and every `yield` in a block passes up through
each template it extends or includes before `render` joins them. Here, consecutive output (text, values, a
translated `{% trans %}` block) is yielded as one string, joined in the order Jinja would have yielded it: a
render gives the same text with a few dozen `yield`s instead of a few hundred."""

from jinja2 import Environment, nodes
from jinja2.compiler import CodeGenerator, Frame


class JoinedOutput(CodeGenerator):
    def blockvisit(self, body, frame: Frame) -> None:
        super().blockvisit(_merged(body), frame)

    def visit_Output(self, node: nodes.Output, frame: Frame) -> None:
        """Jinja's `visit_Output` (3.1), with the parts of one output yielded as one `concat((…))` when they are
        more than one; into a buffer (a macro, `{% set %}` blocks, filters) it is Jinja's own."""
        if frame.buffer is not None:
            super().visit_Output(node, frame)
            return
        if frame.require_output_check:
            if self.has_known_extends:  # nothing is rendered outside a block of a template that extends another
                return
            self.writeline("if parent_template is None:")
            self.indent()
        finalize = self._make_finalize()
        body: list = []  # runs of constant text (lists) and nodes evaluated at render time, in order
        for child in node.nodes:
            try:
                if not (finalize.const or isinstance(child, nodes.TemplateData)):
                    raise nodes.Impossible()
                const = self._output_child_to_const(child, frame, finalize)
            except (nodes.Impossible, Exception):
                body.append(child)
                continue
            if body and isinstance(body[-1], list):
                body[-1].append(const)
            else:
                body.append([const])
        joined = len(body) > 1
        if joined:
            self.writeline("yield concat((")
            self.indent()
        for item in body:
            if isinstance(item, list):
                value = self._output_const_repr(item)
                self.writeline(value + "," if joined else "yield " + value)
                continue
            if joined:
                self.newline(item)
            else:
                self.writeline("yield ", item)
            self._output_child_pre(item, frame, finalize)
            self.visit(item, frame)
            self._output_child_post(item, frame, finalize)
            if joined:
                self.write(",")
        if joined:
            self.outdent()
            self.writeline("))")
        if frame.require_output_check:
            self.outdent()


def _merged(body):
    """Consecutive Output nodes as one (Jinja parses a `{% trans %}` block as an Output of its own)."""
    merged = []
    for node in body:
        if isinstance(node, nodes.Output) and merged and isinstance(merged[-1], nodes.Output):
            merged[-1] = nodes.Output(merged[-1].nodes + node.nodes, lineno=merged[-1].lineno)
        else:
            merged.append(node)
    return merged


class TemplateEnvironment(Environment):
    """Jinja's Environment, compiled with JoinedOutput, and with each template's globals as one plain dict: Jinja
    keeps them as a ChainMap over the environment's globals, which every render (and every `{% include %}`) copies
    key by key, in Python, into the new context: a third of a page's render. The environment's globals are all set
    before its first template is loaded (as Jinja asks: "avoid modifying any globals after a template is loaded"), so
    a copy made when the template is loaded holds the same values."""

    code_generator_class = JoinedOutput

    def make_globals(self, d=None) -> dict:
        return {**self.globals, **(d or {})}

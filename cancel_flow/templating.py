"""The Jinja environment the pages and emails are rendered with: Jinja's own, compiled to yield less.

Jinja compiles a template's text and values as one `yield` each, and every `yield` in a block passes up through
each template it extends or includes before `render` joins them. Here, consecutive output (text, values, a
translated `{% trans %}` block) is yielded as one string, joined in the order Jinja would have yielded it: a
render gives the same text with a few dozen `yield`s instead of a few hundred."""

from jinja2 import Environment, nodes
from jinja2.compiler import CodeGenerator, Frame
from markupsafe._speedups import _escape_inner


def escape_output(value) -> str:
    """markupsafe's `escape` for a value written into a page: the same text, as the plain string the page is joined
    into, without building a Markup object per value (and checking it for `__html__` again) to be joined."""
    if type(value) is str:
        return _escape_inner(value)
    if hasattr(value, "__html__"):
        return value.__html__()
    return _escape_inner(str(value))


class JoinedOutput(CodeGenerator):
    def visit_Template(self, node, frame=None) -> None:
        self.writeline("from cancel_flow.templating import escape_output")
        super().visit_Template(node, frame)

    def _output_child_pre(self, node, frame: Frame, finalize) -> None:
        """A value written with autoescape on: `escape_output(…)` where Jinja writes `escape(…)` (its output is
        only ever joined: into the page, or into a buffer that is joined and marked safe)."""
        if frame.eval_ctx.autoescape and not frame.eval_ctx.volatile:
            self.write("escape_output(")
            if finalize.src is not None:
                self.write(finalize.src)
            return
        super()._output_child_pre(node, frame, finalize)

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

    def _load_template(self, name, globals):
        """Jinja's, with the templates of an environment that never reloads them kept in a plain dict: Jinja's LRU
        cache takes a lock and moves the template to the end of its queue on every `get_template`, `{% extends %}`
        and `{% include %}`. Kept per environment and loader (an overlay, which copies the environment's
        attributes, or a new loader starts over)."""
        if self.auto_reload or globals:
            return super()._load_template(name, globals)
        kept = _KEPT.get((id(self), name))
        if kept is not None and kept[0] is self and kept[1] is self.loader:
            return kept[2]
        template = super()._load_template(name, globals)
        _KEPT[(id(self), name)] = (self, self.loader, template)
        return template


# (id of the environment, template name) → (environment, loader, template), for TemplateEnvironment._load_template.
_KEPT: dict = {}

"""searc: memory-based model editing with SERAC (Mitchell et al., ICML 2022).

    from searc import Editor, load_system
    editor = Editor(load_system())
    editor.add_edit("The Eiffel Tower is located in the city of", "Rome")
    editor.probe(["The Eiffel Tower stands in the city of"])
"""

from searc.editor import Editor, ProbeResult, SeracSystem, TargetComparison
from searc.memory import Edit, EditMemory
from searc.system import load_system, save_checkpoint

__all__ = ["Edit", "EditMemory", "Editor", "ProbeResult", "SeracSystem", "TargetComparison", "load_system", "save_checkpoint"]

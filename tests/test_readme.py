"""The README's hand-built pipeline runs as written."""
import re
from pathlib import Path


def test_readme_pipeline_example_runs(capsys):
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    assert blocks, "README has no python example"
    namespace = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    learner = namespace["learner"]
    assert learner.batch == 8 * 1280 and learner.env_steps > 20_000
    assert "'mean':" in capsys.readouterr().out

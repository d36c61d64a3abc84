"""A key's quickstart: the same first call in curl, Python and JavaScript (pure text).

Filled with the secret only on the page that shows it once (right after creation); afterwards the
secret is gone, so the snippets read the key from an environment variable and say where to put it.
"""

from __future__ import annotations

from dataclasses import dataclass

EXAMPLE_MODEL = "gpt-4o-mini"
ENV_VAR = "AICHAT_API_KEY"


@dataclass(frozen=True, slots=True)
class Snippet:
    id: str  # the element id its Copy button names
    title: str
    code: str


def snippets(base_url: str, key: str | None, model: str = EXAMPLE_MODEL) -> list[Snippet]:
    """Pure: the three snippets for `base_url` (".../v1"); `key` None means "from $AICHAT_API_KEY"."""
    shell_key = key if key is not None else f"${ENV_VAR}"
    py_key = f'"{key}"' if key is not None else f'os.environ["{ENV_VAR}"]'
    js_key = f'"{key}"' if key is not None else f"process.env.{ENV_VAR}"
    py_import = "" if key is not None else "import os\n\n"
    curl = (
        f"curl {base_url}/chat/completions \\\n"
        f'  -H "Authorization: Bearer {shell_key}" \\\n'
        '  -H "Content-Type: application/json" \\\n'
        f'  -d \'{{"model": "{model}", "messages": [{{"role": "user", "content": "Hello!"}}]}}\''
    )
    python = (
        f"{py_import}from openai import OpenAI\n\n"
        f'client = OpenAI(base_url="{base_url}", api_key={py_key})\n'
        "answer = client.chat.completions.create(\n"
        f'    model="{model}",\n'
        '    messages=[{"role": "user", "content": "Hello!"}],\n'
        ")\n"
        "print(answer.choices[0].message.content)"
    )
    javascript = (
        'import OpenAI from "openai";\n\n'
        f'const client = new OpenAI({{ baseURL: "{base_url}", apiKey: {js_key} }});\n'
        "const answer = await client.chat.completions.create({\n"
        f'  model: "{model}",\n'
        '  messages: [{ role: "user", content: "Hello!" }],\n'
        "});\n"
        "console.log(answer.choices[0].message.content);"
    )
    return [
        Snippet("quickstart-curl", "curl", curl),
        Snippet("quickstart-python", "Python (openai)", python),
        Snippet("quickstart-js", "JavaScript (openai)", javascript),
    ]

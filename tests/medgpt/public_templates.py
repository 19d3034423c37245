"""Public chat templates (Jinja) as their models' ``tokenizer_config.json`` ship them: test data for
:mod:`medgpt.templates`. Each is paired with the named format MedGPT writes for its family and the BOS/EOS texts its
tokenizer has. The Jinja text is as published (string escapes such as ``\\n`` are Jinja's own).

Sources: meta-llama/Meta-Llama-3-8B-Instruct, meta-llama/Llama-2-7b-chat-hf, mistralai/Mistral-7B-Instruct-v0.1,
google/gemma-2-2b-it, microsoft/Phi-3-mini-4k-instruct, HuggingFaceTB/SmolLM2-135M-Instruct (the last is also in the
SmolLM2 GGUF that tests/medgpt/test_smollm2.py reads).
"""

LLAMA3 = (
    r"{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + "
    r"message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 "
    r"%}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
    r"{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)

LLAMA2 = (
    r"{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = "
    r"messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif "
    r"%}{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ "
    r"raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if "
    r"loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\n' + system_message + '\n<</SYS>>\n\n'"
    r" + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == "
    r"'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
    r"{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}"
)

MISTRAL = (
    r"{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ "
    r"raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if "
    r"message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == "
    r"'assistant' %}{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant roles "
    r"are supported!') }}{% endif %}{% endfor %}"
)

GEMMA = (
    r"{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    r"{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ "
    r"raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if "
    r"(message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif "
    r"%}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}{% if "
    r"add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}"
)

PHI3 = (
    r"{% for message in messages %}{% if message['role'] == 'system' %}{{'<|system|>\n' + message['content'] + "
    r"'<|end|>\n'}}{% elif message['role'] == 'user' %}{{'<|user|>\n' + message['content'] + '<|end|>\n'}}{% elif "
    r"message['role'] == 'assistant' %}{{'<|assistant|>\n' + message['content'] + '<|end|>\n'}}{% endif %}{% endfor "
    r"%}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}"
)

SMOLLM2 = (
    r"{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou "
    r"are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + "
    r"message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    r"{{ '<|im_start|>assistant\n' }}{% endif %}"
)

#: (family, Jinja text, bos_token, eos_token, the named format that must render the same)
TEMPLATES = [
    ("llama3", LLAMA3, "<|begin_of_text|>", "<|eot_id|>", "llama3"),
    ("llama2", LLAMA2, "<s>", "</s>", "llama2"),
    ("mistral", MISTRAL, "<s>", "</s>", "mistral"),
    ("gemma", GEMMA, "<bos>", "<eos>", "gemma"),
    ("phi3", PHI3, "<s>", "<|endoftext|>", "phi3"),
    ("smollm2", SMOLLM2, "<|im_start|>", "<|im_end|>", "chatml"),
]

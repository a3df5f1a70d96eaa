"""Reading a Hugging Face tokenizer into the GGUF tokenizer metadata that llama.cpp needs.

Two families reach llama.cpp: SentencePiece vocabularies (``tokenizer.ggml.model = "llama"``, from
``tokenizer.model`` or an SPM-style ``tokenizer.json``) and byte-level BPE (``"gpt2"``, from
``tokenizer.json``). For BPE, llama.cpp also needs the *name* of the pre-tokenizer (the regex split
that runs before the merges). llama.cpp's converter finds it by hashing the token ids of a fixed text
and fails with "unknown pre-tokenizer" when a fine-tune changed the vocabulary; here the structure of
``tokenizer.json``'s ``pre_tokenizer`` is a second witness, and ``pre=`` lets a user decide.

Nothing in the model directory is executed: JSON is parsed as data, ``tokenizer.model`` by a small
bounded protobuf reader, and the optional hash check runs the Rust ``tokenizers`` library on the
file (no ``trust_remote_code``, no Python from the model).
"""
from __future__ import annotations

import hashlib
import math
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gguf

from ..errors import InputError, UnsupportedError
from ..files import read_json

NORMAL = int(gguf.TokenType.NORMAL)
UNKNOWN = int(gguf.TokenType.UNKNOWN)
CONTROL = int(gguf.TokenType.CONTROL)
USER_DEFINED = int(gguf.TokenType.USER_DEFINED)
UNUSED = int(gguf.TokenType.UNUSED)
BYTE = int(gguf.TokenType.BYTE)
TOKEN_TYPES = frozenset((NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE))

# Caps: the largest real vocabularies are ~260k tokens and ~30 MB of JSON.
MAX_VOCAB = 1 << 22
MAX_MERGES = 1 << 23
MAX_TOKEN_BYTES = 1 << 16
MAX_SPM_BYTES = 256 << 20
MAX_TEMPLATE_BYTES = 4 << 20
MAX_TEMPLATES = 64

SPACE_MARK = "\u2581"  # SentencePiece's visible space
SPM_PAD_SCORE = -1000.0

# The fixed text llama.cpp's converter tokenizes to fingerprint a BPE pre-tokenizer (a fact of
# convert_hf_to_gguf.py; its sha256 is checked by the tests).
CHK_TXT = (
    "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n\U0001f680 (normal) \U0001f636\u200d\U0001f32b\ufe0f "
    "(multiple emojis concatenated) \u2705 \U0001f999\U0001f999 3 33 333 3333 33333 333333 3333333 33333333 "
    "3.3 3..3 3...3 \u1780\u17b6\u1793\u17cb\u178f\u17c2\u1796\u17b7\u179f\u17c1\u179f\u17a2\u17b6\u1785"
    "\U0001f601 ?\u6211\u60f3\u5728apple\u5de5\u4f5c1314151\u5929\uff5e ------======= "
    "\u043d\u0435\u0449\u043e \u043d\u0430 \u0411\u044a\u043b\u0433\u0430\u0440\u0441\u043a\u0438 "
    "''''''```````\"\"\"\"......!!!!!!?????? I've been 'told he's there, 'RE you sure? 'M not sure I'll "
    "make it, 'D you like some tea? We'Ve a'lL"
)

# sha256(str(token ids of CHK_TXT)) -> llama.cpp pre-tokenizer name (facts from convert_hf_to_gguf.py).
PRE_HASHES: dict[str, str] = {
    "b6e8e1518dc4305be2fe39c313ed643381c4da5db34a98f6a04c093f8afbe99b": "chatglm-bpe",
    "81d72c7348a9f0ebe86f23298d37debe0a5e71149e29bd283904c02262b27516": "chatglm-bpe",
    "a1336059768a55c99a734006ffb02203cd450fed003e9a71886c88acf24fdbc2": "glm4",
    "9ca2dd618e8afaf09731a7cf6e2105b373ba6a1821559f258b272fe83e6eb902": "glm4",
    "cdf5f35325780597efd76153d4d1c16778f766173908894c04afc20108536267": "glm4",
    "1431a23e583c97432bc230bff598d103ddb5a1f89960c8f1d1051aaa944d0b35": "minerva-7b",
    "7e57df22b1fe23a7b1e1c7f3dc4e3f96d43a4eb0836d0c6bdc3436d7b2f1c664": "hunyuan",
    "bba3b3366b646dbdded5dbc42d59598b849371afc42f7beafa914afaa5b70aa6": "hunyuan-dense",
    "e6ddf9c6686791c12d698d34c31ab9be1fea9af5a3d9a6909783ab382198ae1c": "hy_v4",
    "a6b57017d60e6edb4d88ecc2845188e0eb333a70357e45dcc9b53964a73bbae6": "falcon-h1",
    "60476e1243776c4fb1b993dbd7a5f15ac22f83c80afdf425fa5ae01c8d44ef86": "falcon-h1",
    "3eda48b4c4dc7de733d1a8b3e3b4a85243dbbf704da2ee9d42c6beced8897896": "falcon-h1",
    "48f8e02c0359c0bbdd82f26909171fac1c18a457bb47573ed1fe3bbb2c1cfd4b": "falcon-h1",
    "d4540891389ea895b53b399da6ac824becc30f2fba0e9ddbb98f92e55ca0e97c": "qwen2",
    "1444df51289cfa8063b96f0e62b1125440111bc79a52003ea14b6eac7016fd5f": "qwen35",
    "66b8d4e19ab16c3bfd89bce5d785fb7e0155e8648708a1f42077cb9fe002c273": "grok-2",
    "b3d1dd861f1d4c5c0d2569ce36baf3f90fe8a102db3de50dd71ff860d91be3df": "jina-v2-de",
    "0fe1cf6eda062318a1af7270f3331a85c539a01778ff948e24388e949c5282f4": "gpt-2",
    "9e454714343b69b99b71795c1d27a68c2a1d15dab111f4d353109f966af29da7": "lfm2",
    "846deafc5b0fa786186fa4ae6c7b49903cf2f1d1895bdb80b9120d60be135252": "gemma4",
    "0a766d034107bc736a3f2dc4968fd62e54a3570f1454443e0c5a4cc6bd7941ed": "spark2_5",
    "0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5": "llama-bpe",
    "049ecf7629871e3041641907f3de7c733e4dbfdc736f57d882ba0b0845599754": "deepseek-llm",
    "347715f544604f9118bb75ed199f68779f423cabb20db6de6f31b908d04d7821": "deepseek-coder",
    "8aeee3860c56296a157a1fe2fad249ec40aa59b1bb5709f4ade11c4e6fe652ed": "falcon",
    "9d032fcbd5501f4a38150912590928bfb36091efb5df11b8e2124b0390e3fb1e": "falcon3",
    "b6dc8df998e1cfbdc4eac8243701a65afe638679230920b50d6f17d81c098166": "olmo",  # mpt shares it
    "35d91631860c815f952d711435f48d356ebac988362536bed955d43bfa436e34": "starcoder",
    "3ce83efda5659b07b1ad37ca97ca5797ea4285d9b9ab0dc679e4a720c9da7454": "gpt-2",
    "32d85c31273f8019248f2559fed492d929ea28b17e51d81d3bb36fff23ca72b3": "stablelm2",
    "6221ad2852e85ce96f791f476e0b390cf9b474c9e3d1362f53a24a06dc8220ff": "refact",
    "9c2227e4dd922002fb81bde4fc02b0483ca4f12911410dee2255e4987644e3f8": "command-r",
    "d772b220ace2baec124bed8cfafce0ead7d6c38a4b65ef11261cf9d5d62246d1": "tiny_aya",
    "52df12b4c8d4176e7481aab4b6e8454d1fd0a210a04a574f6d4e067d10e23c3e": "cohere2moe",
    "e636dc30a262dcc0d8c323492e32ae2b70728f4df7dfe9737d9f920a282b8aea": "qwen2",
    "a8594e3edff7c29c003940395316294b2c623e09894deebbc65f33f1515df79e": "dbrx",
    "c7699093ba4255a91e702aa38a596aa81669f3525dae06c2953267dde580f448": "jina-v1-en",
    "171aeeedd6fb548d418a7461d053f11b6f1f1fc9b387bd66640d28a4b9f5c643": "jina-v2-es",
    "27949a2493fc4a9f53f5b9b029c82689cfbe5d3a1929bb25e043089e28466de6": "jina-v2-de",
    "a023e9fdc5a11f034d3ef515b92350e56fb2af1f66c6b6811a4444ea9bf8763d": "jina-v5-nano",
    "c136ed14d01c2745d4f60a9596ae66800e2b61fa45643e72436041855ad4089d": "smaug-bpe",
    "c7ea5862a53e4272c035c8238367063e2b270d51faa48c0f09e9d5b54746c360": "poro-chat",
    "7967bfa498ade6b757b064f31e964dddbb80f8f9a4d68d4ba7998fcf281c531a": "jina-v2-code",
    "7fc505bd3104ca1083b150b17d088b59534ede9bde81f0dd2090967d7fe52cee": "viking",
    "b53802fb28e26d645c3a310b34bfe07da813026ec7c7716883404d5e0f8b1901": "jais",
    "bc5108ee1eb6a3d600cadd065f63190fbd0554dbc9e4bbd6a0d977970afc8d2a": "jais-2",
    "7b3e7548e4308f52a76e8229e4e6cc831195d0d1df43aed21ac6c93da05fec5f": "codeshell",
    "63b97e4253352e6f357cc59ea5b583e3a680eaeaf2632188c2b952de2588485e": "tekken",
    "855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249": "smollm",
    "3c30d3ad1d6b64202cd222813e7736c2db6e1bd6d67197090fc1211fbc612ae7": "bloom",
    "bc01ce58980e1db43859146dc51b1758b3b88729b217a74792e9f8d43e479d21": "gpt3-finnish",
    "4e2b24cc4770243d65a2c9ec19770a72f08cffc161adbb73fcbb6b7dd45a0aae": "exaone",
    "fcace8b9cac38ce847670c970cd5892031a753a1ef381abd1d9af00f713da085": "phi-2",
    "60824e3c0d9401f89943cbb2fff727f0e2d4c545ba4df2d6e4f09a6db0f5b450": "chameleon",
    "8b5a93ed704057481f240da0be7e7dca721d7f8f4755263b6807227a2cbeae65": "roberta-bpe",
    "ad851be1dba641f2e3711822f816db2c265f788b37c63b4e1aeacb9ee92de8eb": "gigachat",
    "d4c8f286ea6b520b3d495c4455483cfa2302c0cfcd4be05d781b6a8a0a7cdaf1": "megrez",
    "877081d19cf6996e2c4ff0e1236341e9b7bde288f5311a56a937f0afbbb3aeb5": "deepseek-v3",
    "b3f499bb4255f8ca19fccd664443283318f2fd2414d5e0b040fbdd0cc195d6c5": "deepseek-r1-qwen",
    "ccc2ef013c104be7bae2965776d611e1d7a8a2a9c547dd93a682c9a9fc80352e": "gpt-4o",
    "7dec86086fcc38b66b7bc1575a160ae21cf705be7718b9d5598190d7c12db76f": "superbpe",
    "1994ffd01900cfb37395608534236ecd63f2bd5995d6cb1004dda1af50240f15": "trillion",
    "96a5f08be6259352137b512d4157e333e21df7edd3fcd152990608735a65b224": "bailingmoe",
    "d353350c764d8c3b39c763113960e4fb4919bea5fbf208a0e3b22e8469dc7406": "llama4",
    "0e9433cbbb161f89e264eb32e8e64bfe69e834973ffca5d41d3948a604a3e2a3": "pixtral",
    "d5f1dd6f980fec569fb218a81a7658ac45fc56b38c5a0adeb1c232fbe04ef5ec": "seed-coder",
    "b0a6b1c0bd5998ebd9df08611efde34a4ff03faed45ae09c43e6b31ebd4b94cf": "a.x-4.0",
    "f6791d196f87ce6b56a7d234be618e0d58f8cda3549416635b2bebcd22cd95c4": "midm-2.0",
    "169bf0296a13c4d9b7672313f749eb36501d931022de052aad6e36f2bf34dd51": "lfm2",
    "2085e1638f6c377a0aa4ead21b27bb4cb941bf800df86ed391011769c1758dfb": "exaone4",
    "a1e163ecab2e718a4c829d1148b6e86824ec36163bb71941c3dca9cd5ac25756": "mellum",
    "a0b64b4385f123663873756336c085744376d015ff328bb1d901598f63c44152": "modern-bert",
    "49fc0303c9e0d2c2c565c510f64b2d9b271276acdcdadff733249eda9f7d59df": "afmoe",
    "9b1be57e70d20d9501b2b3186e792d81181ae36ada3903c26f9fea418cf87206": "bailingmoe2",
    "53e325976a6e142379c19b09afcae354f2f496f147afa8f9e189a33fe4e3024e": "granite-docling",
    "f4f37b6c8eb9ea29b3eac6bb8c8487c5ab7885f8d8022e67edc1c68ce8403e95": "minimax-m2",
    "4a2e2abae11ca2b86d570fc5b44be4d5eb5e72cc8f22dd136a94b37da83ab665": "kormo",
    "9d70134b369a70e5735009b6de918f7581b5211f7c074d1f89f753aea8248af1": "youtu",
    "16389f0a1f51ee53e562ffd51c371dc508639ab0e4261502071836e50e223e91": "solar-open",
    "6c81ce329e0802883b22eabab0d3fa48357337ef1ecb45443828bf1f6254833f": "exaone-moe",
    "d30d75d9059f1aa2c19359de71047b3ae408c70875e8a3ccf8c5fba56c9d8af4": "qwen35",
    "b4b8ca1f9769494fbd956ebc4c249de6131fb277a4a3345a7a92c7dd7a55808d": "joyai-llm",
    "e4d54df1ebc1f2b91acd986c5b51aa50837d5faf7c7398e73c1f9e9ee5d19869": "kanana2",
    "862f827721df956049dff5ca81a57f29e575280bc622e290d3bf4e35eca29015": "f2llmv2",
    "62f6fb0a6fd5098caeabb19b07a5c1099cafc8b9c40eab6ea89ece4ec02fbc57": "sarvam-moe",
    "f728162c1315c26e40249849799b4ba3fe584c32084b4795b03eb295e63cb5af": "talkie",
    "36f3066e97b7f3994b379aaacde306c1444c6ae84e81a5ae3cd2b7ed3b8c42d4": "minicpm5",
    "f241072145675bf8322086f115aebad05e9f869557a238bf2150a2a417d1bf60": "granite-embed-multi-97m",
    "789696f5946cc0fc59371f39f6097cafed196b3acded6140432f26bbb1ae1669": "granite-embed-multi-311m",
    "9dcf830ee9990cdbf78cc523a5f7bd9ad8f3f9890c2d3581d2785ad10f07049d": "mellum2",
    "972da7b59cec44d1f0a490a86c96df53859e486e481563e5dddac155013d87ac": "laguna",
    "653660222fb704f61cbf2b618a8ae6502b7f8b20c980f9a5de07ed78e13319cd": "ufakzeka",
}

# Every pre-tokenizer name this llama.cpp accepts for a BPE vocabulary (src/llama-vocab.cpp).
LLAMA_CPP_PRE_NAMES = frozenset((
    "a.x-4.0", "afmoe", "bailingmoe", "bailingmoe2", "bloom", "chameleon", "chatglm-bpe", "codeshell",
    "cohere2moe", "command-r", "dbrx", "deepseek-coder", "deepseek-llm", "deepseek-r1-qwen", "deepseek-v3",
    "default", "exaone", "exaone-moe", "exaone4", "f2llmv2", "falcon", "falcon-h1", "falcon3", "gemma4",
    "gigachat", "glm4", "glm5", "gpt-2", "gpt-4o", "gpt3-finnish", "granite-docling",
    "granite-embed-multi-311m", "granite-embed-multi-97m", "grok-2", "hunyuan", "hunyuan-dense", "hy_v4",
    "jais", "jais-2", "jina-de", "jina-es", "jina-v1-en", "jina-v2-code", "jina-v2-de", "jina-v2-es",
    "jina-v5-nano", "joyai-llm", "kanana2", "kimi-k2", "kormo", "laguna", "lfm2", "llada-moe", "llama-bpe",
    "llama-v3", "llama3", "llama4", "megrez", "mellum", "mellum2", "midm-2.0", "minerva-7b", "minicpm5",
    "minimax-m2", "modern-bert", "mpt", "olmo", "phi-2", "pixtral", "poro-chat", "qwen2", "qwen35", "refact",
    "roberta-bpe", "sarvam-moe", "seed-coder", "smaug-bpe", "smollm", "solar-open", "spark2_5", "stablelm2",
    "starcoder", "superbpe", "talkie", "tekken", "tiny_aya", "trillion", "ufakzeka", "viking", "whitespace",
    "youtu",
))

# name -> (regex group, ignore_merges, default add_bos, clean_spaces), as llama.cpp sets them.
# Names in one group split text identically; the flags are what else llama.cpp ties to the name.
PRE_NAMES: dict[str, tuple[str, bool, bool, bool]] = {
    "default": ("default", False, False, True),
    **{n: ("llama3", True, True, True) for n in (
        "llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2", "jina-v5-nano")},
    "dbrx": ("llama3", False, False, True),
    "smaug-bpe": ("llama3", False, False, True),
    "chatglm-bpe": ("llama3", False, False, True),
    "glm4": ("llama3", True, False, True),
    "glm5": ("llama3", True, False, True),
    "deepseek-llm": ("deepseek-llm", False, False, False),
    "deepseek-coder": ("deepseek-coder", False, False, False),
    **{n: ("deepseek-v3", False, False, False) for n in ("deepseek-v3", "hunyuan-dense", "hy_v4", "joyai-llm")},
    "youtu": ("youtu", True, False, False),
    "falcon": ("falcon", False, False, True),
    **{n: ("gpt2", False, False, True) for n in (
        "gpt-2", "phi-2", "jina-es", "jina-de", "gigachat", "jina-v2-es", "jina-v2-de", "a.x-4.0", "mellum",
        "modern-bert", "mpt", "olmo", "jais", "exaone4", "jina-v1-en", "jina-v2-code", "roberta-bpe")},
    "trillion": ("gpt2", False, False, False),
    "granite-docling": ("gpt2", False, False, False),
    **{n: ("starcoder", False, False, True) for n in (
        "starcoder", "refact", "codeshell", "exaone", "minerva-7b", "mellum2")},
    "command-r": ("starcoder", False, False, False),
    "smollm": ("starcoder", False, False, False),
    **{n: ("qwen2", False, False, False) for n in (
        "qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "hunyuan", "grok-2", "solar-open")},
    "stablelm2": ("qwen2", False, False, True),
    "megrez": ("qwen2", False, False, True),
    "qwen35": ("qwen35", False, False, False),
    **{n: ("gpt4o", False, False, False) for n in ("gpt-4o", "llama4", "kanana2", "talkie", "minimax-m2")},
    "tekken": ("tekken", True, True, False),
    "poro-chat": ("bloom", False, False, False),
    "bloom": ("bloom", False, False, True),
    "gpt3-finnish": ("bloom", False, False, True),
    "viking": ("viking", False, False, False),
    "jais-2": ("jais-2", False, False, True),
    "ufakzeka": ("ufakzeka", False, False, False),
    **{n: ("bailingmoe", False, False, False) for n in ("bailingmoe", "bailingmoe2", "llada-moe")},
    "laguna": ("laguna", False, False, False),
    "minicpm5": ("minicpm5", True, False, True),
    "exaone-moe": ("exaone-moe", False, False, True),
    **{n: ("tiny_aya", False, False, False) for n in ("tiny_aya", "cohere2moe")},
    "seed-coder": ("seed-coder", False, False, False),
}

# The name picked when a group is recognised by structure alone.
GROUP_DEFAULT_NAME = {
    "default": "default", "llama3": "llama-bpe", "deepseek-llm": "deepseek-llm",
    "deepseek-coder": "deepseek-coder", "deepseek-v3": "deepseek-v3", "youtu": "youtu", "falcon": "falcon",
    "gpt2": "gpt-2", "starcoder": "starcoder", "qwen2": "qwen2", "qwen35": "qwen35", "gpt4o": "gpt-4o",
    "tekken": "tekken", "bloom": "bloom", "viking": "viking", "jais-2": "jais-2", "ufakzeka": "ufakzeka",
    "bailingmoe": "bailingmoe", "laguna": "laguna", "minicpm5": "minicpm5", "exaone-moe": "exaone-moe",
    "tiny_aya": "tiny_aya", "seed-coder": "seed-coder",
}

# Contractions: Hugging Face writes them case-insensitively, llama.cpp spells the cases out.
_CONTRACTIONS_HF = "(?i:'s|'t|'re|'ve|'m|'ll|'d)"
_CONTRACTIONS_CPP = "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"

# Split regexes as they appear in the models' tokenizer.json files (facts from HF / llama.cpp).
GPT2_REGEX = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
LLAMA3_REGEX = (_CONTRACTIONS_HF + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_REGEX = (_CONTRACTIONS_HF + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN35_REGEX = (_CONTRACTIONS_HF + r"|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
_CASED = r"[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]"
_LOWER = r"[\p{Ll}\p{Lm}\p{Lo}\p{M}]"
GPT4O_REGEX = (rf"[^\r\n\p{{L}}\p{{N}}]?{_CASED}*{_LOWER}+{_CONTRACTIONS_HF}?"
               rf"|[^\r\n\p{{L}}\p{{N}}]?{_CASED}+{_LOWER}*{_CONTRACTIONS_HF}?"
               r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")
TEKKEN_REGEX = (rf"[^\r\n\p{{L}}\p{{N}}]?{_CASED}*{_LOWER}+|[^\r\n\p{{L}}\p{{N}}]?{_CASED}+{_LOWER}*"
                r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")

# Groups known only by llama.cpp's own split list (src/llama-vocab.cpp), used as a Split chain.
LLAMA_CPP_SPLITS: dict[str, list[str]] = {
    'default': [
        '[\\p{P}\\$\\+<=>\\^~\\|]+',
        "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)",
        '\\p{N}+',
        '[0-9][0-9][0-9]',
    ],
    'deepseek-llm': [
        '[\r\n]',
        '\\s?[A-Za-z\xb5\xc0-\xd6\xd8-\xf6\xf8-\u01ba\u01bc-\u01bf\u01c4-\u0293\u0295-\u02af\u0370-\u0373\u0376\u0377\u037b-\u037d\u037f\u0386\u0388-\u038a\u038c\u038e-\u03a1\u03a3-\u03f5\u03f7-\u0481\u048a-\u052f\u0531-\u0556\u10a0-\u10c5\u13a0-\u13f5\u13f8-\u13fd\u1c90-\u1cba\u1cbd-\u1cbf\u1d00-\u1d2b\u1d6b-\u1d77\u1d79-\u1d9a\u1e00-\u1f15\u1f18-\u1f1d\u1f20-\u1f45\u1f48-\u1f4d\u1f50-\u1f57\u1f59\u1f5b\u1f5d\u1f5f-\u1f7d\u1f80-\u1fb4\u1fb6-\u1fbc\u1fbe\u1fc2-\u1fc4\u1fc6-\u1fcc\u1fd0-\u1fd3\u1fd6-\u1fdb\u1fe0-\u1fec\u1ff2-\u1ff4\u1ff6-\u1ffc\u2102\u2107\u210a-\u2113\u2115\u2119-\u211d\u2124\u2126\u2128\u212a-\u212d\u212f-\u2134\u2139\u213c-\u213f\u2145-\u2149\u214e\u2183\u2184\u2c00-\u2c7b\u2c7e-\u2ce4\u2ceb-\u2cee\u2cf2\u2cf3\ua640-\ua66d\ua680-\ua69b\ua722-\ua76f\ua771-\ua787\ua78b-\ua78e\uab70-\uabbf\ufb00-\ufb06\ufb13-\ufb17\uff21-\uff3a\uff41-\uff5a\U00010400-\U0001044f\U000104b0-\U000104d3\U000104d8-\U000104fb\U00010c80-\U00010cb2\U00010cc0-\U00010cf2\U000118a0-\U000118df\U0001e900-\U0001e943]+',
        '\\s?[!-/:-~\uff01-\uff0f\uff1a-\uff5e\u2018-\u201f\u3000-\u3002]+',
        '\\s+$',
        '[\u4e00-\u9fa5\u0800-\u4e00\uac00-\ud7ff]+',
        '\\p{N}+',
    ],
    'deepseek-coder': [
        '[\r\n]',
        '\\s?\\p{L}+',
        '\\s?\\p{P}+',
        '[\u4e00-\u9fa5\u0800-\u4e00\uac00-\ud7ff]+',
        '\\p{N}',
    ],
    'deepseek-v3': [
        '\\p{N}{1,3}',
        '[\u4e00-\u9fa5\u3040-\u309f\u30a0-\u30ff]+',
        '[!"#$%&\'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+',
    ],
    'bloom': [
        ' ?[^(\\s|.,!?\u2026\u3002\uff0c\u3001\u0964\u06d4\u060c)]+',
    ],
    'viking': [
        ' ?[^(\\s|.,!?\u2026\u3002\uff0c\u3001\u0964\u06d4\u060c)]+',
        '\\p{N}',
    ],
    'jais-2': [
        "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s{512}(?!\\S)|\\s{256}(?!\\S)|\\s{128}(?!\\S)|\\s{64}(?!\\S)|\\s{32}(?!\\S)|\\s{16}(?!\\S)|\\s{8}(?!\\S)|\\s{4}(?!\\S)|\\s{1,2}(?!\\S)|\\s{1}",
    ],
    'ufakzeka': [
        '[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+',
    ],
    'bailingmoe': [
        "'(?:[sSdDmMtT]|[lL][lL]|[vV][eE]|[rR][eE])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]|\\s+(?!\\S)|\\s+",
    ],
    'laguna': [
        '[^\\n]+|[\\n]+',
        "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
    ],
    'minicpm5': [
        '\\p{N}{1,3}',
        "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}+| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
    ],
    'youtu': [
        '[\uac00-\ud7a3\u3131-\u318e]+|[\uff01\u2026\u201c\u201d\u2018\u2019\u2014\uff1a\uff1b\uff0c\u3001-\u303f\ufe30-\ufe4f]+|[\u3105-\u312f]+|[\u4e00-\u9fa5\u3040-\u309f\u30a0-\u30ff]+',
        "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
    ],
    'exaone-moe': [
        "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?(?:\\p{L}\\p{M}*(?: \\p{L}\\p{M}*)*)+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]?|\\s*[\\r\\n]|\\s+(?!\\S)|\\s+",
    ],
    'tiny_aya': [
        '\\d{1,3}(?=(?:\\d{3})*\\b)',
        "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
    ],
    'seed-coder': [
        "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1}| ?[^\\s\\p{L}\\p{N}\\r\\n]+|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
    ],
}


def _split(regex: str) -> dict:
    return {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": False}


BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}
BYTE_LEVEL_REGEX = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}


def hf_pre_tokenizer(group: str) -> list[dict]:
    """The Hugging Face ``pre_tokenizer`` steps that split text the way llama.cpp's group does."""
    native = {
        "gpt2": [BYTE_LEVEL_REGEX],
        "starcoder": [{"type": "Digits", "individual_digits": True}, BYTE_LEVEL_REGEX],
        "llama3": [_split(LLAMA3_REGEX), BYTE_LEVEL],
        "qwen2": [_split(QWEN2_REGEX), BYTE_LEVEL],
        "qwen35": [_split(QWEN35_REGEX), BYTE_LEVEL],
        "gpt4o": [_split(GPT4O_REGEX), BYTE_LEVEL],
        "tekken": [_split(TEKKEN_REGEX), BYTE_LEVEL],
        "falcon": [{"type": "Punctuation", "behavior": "Contiguous"}, BYTE_LEVEL_REGEX,
                   {"type": "Digits", "individual_digits": False}, _split("[0-9][0-9][0-9]")],
    }
    if group in native:
        return native[group]
    if group in LLAMA_CPP_SPLITS:
        return [_split(_canonical_regex(r)) for r in LLAMA_CPP_SPLITS[group]] + [BYTE_LEVEL]
    raise UnsupportedError(f"pre-tokenizer group {group!r} has no Hugging Face form here")


@dataclass
class TokenizerSpec:
    """Everything llama.cpp reads from ``tokenizer.*``: plain data, writable by ``add_tokenizer_metadata``."""

    model: str  # "gpt2" (byte-level BPE) or "llama" (SentencePiece)
    tokens: list[str]
    token_types: list[int]
    scores: list[float] | None = None
    merges: list[str] | None = None
    pre: str | None = None
    bos_id: int | None = None
    eos_id: int | None = None
    unk_id: int | None = None
    pad_id: int | None = None
    sep_id: int | None = None
    mask_id: int | None = None
    eot_id: int | None = None
    eom_id: int | None = None
    extra_eos_ids: list[int] = field(default_factory=list)  # further ids that end generation
    add_bos: bool | None = None
    add_eos: bool | None = None
    add_space_prefix: bool | None = None
    remove_extra_whitespaces: bool | None = None
    chat_template: str | None = None
    chat_templates: dict[str, str] = field(default_factory=dict)  # named templates besides the default
    pre_source: str | None = None  # "forced", "hash" or "structure"
    source: str = ""  # the file the vocabulary came from
    notes: list[str] = field(default_factory=list)  # things the user should hear about


# ---------------------------------------------------------------------------------------------
# entry points


def load_tokenizer(model_dir: Path, config: dict, *, pre: str | None = None) -> TokenizerSpec:
    """Read the tokenizer of a Hugging Face model directory (``config`` is its parsed config.json).

    ``pre`` forces the BPE pre-tokenizer name when detection cannot decide (or decides wrongly).
    """
    root = Path(model_dir)
    if not root.is_dir():
        raise InputError(f"{root}: not a directory")
    if not isinstance(config, dict):
        raise InputError(f"{root}/config.json: expected a JSON object")
    if pre is not None and (not isinstance(pre, str) or pre not in LLAMA_CPP_PRE_NAMES):
        raise UnsupportedError(
            f"pre-tokenizer {pre!r} is not one llama.cpp knows; choose one of: {', '.join(sorted(LLAMA_CPP_PRE_NAMES))}"
        )
    tok_cfg = _optional_json(root / "tokenizer_config.json", "tokenizer config")
    vocab_size = _config_vocab_size(config, root)
    json_path, spm_path = root / "tokenizer.json", root / "tokenizer.model"
    tok_json = read_json(json_path, "tokenizer") if json_path.is_file() else None
    if tok_json is not None and not isinstance(tok_json, dict):
        raise InputError(f"{json_path}: expected a JSON object")

    spm = None
    if spm_path.is_file() and not (tok_json is not None and _is_byte_level(tok_json)):
        # llama.cpp reads tokenizer.model for SentencePiece families; a byte-level tokenizer.json
        # beside it means tokenizer.model is something else (tiktoken, or stale) and loses.
        spm = _read_spm(spm_path, strict=tok_json is None)
        spm_note = None if spm is not None else f"{spm_path}: not a SentencePiece model; used tokenizer.json"
    else:
        spm_note = None
    if spm is not None:
        spec = _spec_from_spm(spm, spm_path, root, tok_cfg, tok_json, vocab_size)
    elif tok_json is not None:
        spec = _spec_from_tokenizer_json(tok_json, json_path, tok_cfg, vocab_size)
    else:
        if (root / "vocab.json").is_file() or (root / "tekken.json").is_file():
            raise UnsupportedError(
                f"{root}: only vocab.json/merges.txt or tekken.json found; save the tokenizer with "
                "transformers (tokenizer.save_pretrained) to get a tokenizer.json"
            )
        raise InputError(f"{root}: no tokenizer found (expected tokenizer.json or tokenizer.model)")

    if spm_note:
        spec.notes.append(spm_note)
    _apply_special_ids(spec, root, tok_cfg, tok_json, config)
    _apply_add_flags(spec, tok_cfg, tok_json, json_path)
    if spec.model == "gpt2":
        spec.pre, spec.pre_source = _choose_pre(spec, tok_json, json_path, tok_cfg, pre)
    elif pre is not None:
        spec.notes.append(f"pre={pre!r} ignored: SentencePiece vocabularies have no pre-tokenizer")
    spec.chat_template, spec.chat_templates = _chat_templates(root, tok_cfg)
    _mark_extra_eos(spec)
    check_spec(spec)
    return spec


def add_tokenizer_metadata(writer: gguf.GGUFWriter, spec: TokenizerSpec) -> None:
    """Write every ``tokenizer.*`` key llama.cpp reads."""
    check_spec(spec)
    writer.add_tokenizer_model(spec.model)
    if spec.pre is not None:
        writer.add_tokenizer_pre(spec.pre)
    elif spec.model == "llama":
        writer.add_tokenizer_pre("default")
    writer.add_token_list(spec.tokens)
    if spec.scores is not None:
        writer.add_token_scores(spec.scores)
    writer.add_token_types(spec.token_types)
    if spec.merges:
        writer.add_token_merges(spec.merges)
    for value, add in (
        (spec.bos_id, writer.add_bos_token_id), (spec.eos_id, writer.add_eos_token_id),
        (spec.unk_id, writer.add_unk_token_id), (spec.sep_id, writer.add_sep_token_id),
        (spec.pad_id, writer.add_pad_token_id), (spec.mask_id, writer.add_mask_token_id),
        (spec.eot_id, writer.add_eot_token_id), (spec.eom_id, writer.add_eom_token_id),
    ):
        if value is not None:
            add(value)
    for flag, add in (
        (spec.add_bos, writer.add_add_bos_token), (spec.add_eos, writer.add_add_eos_token),
        (spec.add_space_prefix, writer.add_add_space_prefix),
        (spec.remove_extra_whitespaces, writer.add_remove_extra_whitespaces),
    ):
        if flag is not None:
            add(flag)
    if spec.chat_templates:
        choices = [{"name": name, "template": t} for name, t in sorted(spec.chat_templates.items())]
        if spec.chat_template is not None:
            choices.insert(0, {"name": "default", "template": spec.chat_template})
        writer.add_chat_template(choices)
    elif spec.chat_template is not None:
        writer.add_chat_template(spec.chat_template)


def check_spec(spec: TokenizerSpec) -> None:
    """Refuse a spec llama.cpp would crash on (mismatched arrays, duplicate tokens, bad ids)."""
    n = len(spec.tokens)
    where = spec.source or "tokenizer"
    if spec.model not in ("gpt2", "llama"):
        raise UnsupportedError(f"{where}: tokenizer model {spec.model!r} is not supported (gpt2 or llama)")
    if not 0 < n <= MAX_VOCAB:
        raise InputError(f"{where}: vocabulary of {n} tokens (must be 1..{MAX_VOCAB})")
    if len(spec.token_types) != n or (spec.scores is not None and len(spec.scores) != n):
        raise InputError(f"{where}: token, type and score lists differ in length")
    if spec.model == "llama" and spec.scores is None:
        raise InputError(f"{where}: a SentencePiece vocabulary needs scores")
    if spec.model == "gpt2" and not spec.merges:
        raise InputError(f"{where}: a BPE vocabulary needs merges")
    bad = next((t for t in spec.token_types if t not in TOKEN_TYPES), None)
    if bad is not None:
        raise InputError(f"{where}: token type {bad!r} is not one of {sorted(TOKEN_TYPES)}")
    seen: dict[str, int] = {}
    for i, t in enumerate(spec.tokens):
        if not isinstance(t, str):
            raise InputError(f"{where}: token {i} is not a string")
        if t and seen.setdefault(t, i) != i:
            raise InputError(f"{where}: token {t!r} appears twice (ids {seen[t]} and {i}); llama.cpp needs unique tokens")
    for name in ("bos_id", "eos_id", "unk_id", "pad_id", "sep_id", "mask_id", "eot_id", "eom_id"):
        v = getattr(spec, name)
        if v is not None and (type(v) is not int or not 0 <= v < n):
            raise InputError(f"{where}: {name} {v!r} is outside the vocabulary (0..{n - 1})")
    if spec.pre is not None and spec.pre not in LLAMA_CPP_PRE_NAMES:
        raise UnsupportedError(f"{where}: pre-tokenizer {spec.pre!r} is not one llama.cpp knows")


# ---------------------------------------------------------------------------------------------
# hostile-input helpers


def _optional_json(path: Path, what: str) -> dict:
    if not path.is_file():
        return {}
    data = read_json(path, what)
    if not isinstance(data, dict):
        raise InputError(f"{path}: {what} must be a JSON object")
    return data


def _int_or_none(value: Any, where: str, what: str) -> int | None:
    if value is None:
        return None
    if type(value) is not int:
        raise InputError(f"{where}: {what} must be an integer, got {type(value).__name__}")
    return value


def _bool_or_none(value: Any, where: str, what: str) -> bool | None:
    if value is None:
        return None
    if not isinstance(value, bool):
        raise InputError(f"{where}: {what} must be true or false, got {type(value).__name__}")
    return value


def _config_vocab_size(config: dict, root: Path) -> int | None:
    value = config.get("vocab_size")
    if value is None and isinstance(config.get("text_config"), dict):
        value = config["text_config"].get("vocab_size")
    value = _int_or_none(value, f"{root}/config.json", "vocab_size")
    if value is not None and not 0 < value <= MAX_VOCAB:
        raise InputError(f"{root}/config.json: vocab_size {value} is outside 1..{MAX_VOCAB}")
    return value


def _looks_special(text: str) -> bool:
    """Added tokens llama.cpp's converter treats as control even when not flagged special."""
    return (
        text in ("<pad>", "<mask>", "<2mass>", "[@BOS@]")
        or (text.startswith("<|") and text.endswith("|>"))
        or (text.startswith("<\uff5c") and text.endswith("\uff5c>"))
        or (text.startswith("<unused") and text.endswith(">"))
    )


def _added_tokens(tok_json: dict | None, path: Path) -> list[tuple[int, str, bool]]:
    """``added_tokens`` of tokenizer.json as (id, content, special)."""
    if tok_json is None:
        return []
    raw = tok_json.get("added_tokens") or []
    if not isinstance(raw, list) or len(raw) > MAX_VOCAB:
        raise InputError(f"{path}: added_tokens must be a list of at most {MAX_VOCAB} entries")
    out = []
    for i, entry in enumerate(raw):
        if not isinstance(entry, dict):
            raise InputError(f"{path}: added_tokens[{i}] must be an object")
        tid = _int_or_none(entry.get("id"), str(path), f"added_tokens[{i}].id")
        content = entry.get("content")
        if tid is None or not 0 <= tid < MAX_VOCAB or not isinstance(content, str) or len(content) > MAX_TOKEN_BYTES:
            raise InputError(f"{path}: added_tokens[{i}] needs an id in 0..{MAX_VOCAB - 1} and a string content")
        out.append((tid, content, bool(entry.get("special", False))))
    return out


def _added_tokens_decoder(tok_cfg: dict, root: Path) -> list[tuple[int, str, bool]]:
    raw = tok_cfg.get("added_tokens_decoder") or {}
    where = f"{root}/tokenizer_config.json"
    if not isinstance(raw, dict) or len(raw) > MAX_VOCAB:
        raise InputError(f"{where}: added_tokens_decoder must be an object of at most {MAX_VOCAB} entries")
    out = []
    for key, entry in raw.items():
        if not key.isdigit() or len(key) > 9 or not isinstance(entry, dict) or not isinstance(entry.get("content"), str):
            raise InputError(f"{where}: added_tokens_decoder entry {key!r} must map an id to {{content, special}}")
        tid = int(key)
        if tid >= MAX_VOCAB:
            raise InputError(f"{where}: added token id {tid} is over {MAX_VOCAB}")
        out.append((tid, entry["content"], bool(entry.get("special", False))))
    return out


# ---------------------------------------------------------------------------------------------
# SentencePiece: a bounded reader for the few ModelProto fields llama.cpp needs


@dataclass
class _Spm:
    pieces: list[str]
    scores: list[float]
    types: list[int]
    model_type: int = 1  # 1 unigram, 2 BPE, 3 word, 4 char
    byte_fallback: bool = False
    add_dummy_prefix: bool = True
    remove_extra_whitespaces: bool = True
    unk_id: int = 0
    bos_id: int = 1
    eos_id: int = 2
    pad_id: int = -1


def _varint(buf: memoryview, i: int, where: str) -> tuple[int, int]:
    result = shift = 0
    for _ in range(10):
        if i >= len(buf):
            raise InputError(f"{where}: truncated protobuf varint")
        byte = buf[i]
        i += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, i
        shift += 7
    raise InputError(f"{where}: protobuf varint longer than 10 bytes")


def _pb_fields(buf: memoryview, where: str) -> Iterator[tuple[int, int, Any]]:
    """(field number, wire type, value): ints for varints, memoryviews for the rest."""
    i, n = 0, len(buf)
    while i < n:
        key, i = _varint(buf, i, where)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i, where)
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            if size > n - i:
                raise InputError(f"{where}: truncated protobuf field {number}")
            value, i = buf[i:i + size], i + size
        elif wire == 2:
            size, i = _varint(buf, i, where)
            if size > n - i:
                raise InputError(f"{where}: protobuf field {number} claims {size} bytes, {n - i} left")
            value, i = buf[i:i + size], i + size
        else:
            raise InputError(f"{where}: unsupported protobuf wire type {wire} (not a SentencePiece model?)")
        yield number, wire, value


def _int32(v: int) -> int:
    v &= (1 << 64) - 1
    return v - (1 << 64) if v >= 1 << 63 else v


def _read_spm(path: Path, strict: bool) -> _Spm | None:
    """Parse tokenizer.model; ``None`` (when not strict) if it is not a SentencePiece model at all."""
    where = str(path)
    try:
        size = path.stat().st_size
        if size > MAX_SPM_BYTES:
            raise InputError(f"{where}: {size} bytes, over the {MAX_SPM_BYTES}-byte limit for tokenizer.model")
        data = memoryview(path.read_bytes())
    except OSError as e:
        raise InputError(f"{where}: cannot read: {e.strerror}") from None
    try:
        return _parse_spm(data, where)
    except InputError:
        if strict:
            raise
        return None


def _parse_spm(data: memoryview, where: str) -> _Spm:
    spm = _Spm([], [], [])
    for number, wire, value in _pb_fields(data, where):
        if number == 1 and wire == 2:
            piece, score, ptype = None, 0.0, NORMAL
            for n2, w2, v2 in _pb_fields(value, where):
                if n2 == 1 and w2 == 2:
                    if len(v2) > MAX_TOKEN_BYTES:
                        raise InputError(f"{where}: piece {len(spm.pieces)} is {len(v2)} bytes long")
                    try:
                        piece = bytes(v2).decode("utf-8")
                    except UnicodeDecodeError:
                        raise InputError(f"{where}: piece {len(spm.pieces)} is not UTF-8") from None
                elif n2 == 2 and w2 == 5:
                    score = struct.unpack("<f", v2)[0]
                elif n2 == 3 and w2 == 0:
                    ptype = v2
            if piece is None:
                raise InputError(f"{where}: piece {len(spm.pieces)} has no text")
            if ptype not in TOKEN_TYPES:
                raise InputError(f"{where}: piece {len(spm.pieces)} has unknown type {ptype}")
            if ptype == USER_DEFINED:
                piece = piece.replace(SPACE_MARK, " ")  # llama.cpp matches user symbols on raw text
            if not math.isfinite(score):
                raise InputError(f"{where}: piece {len(spm.pieces)} has a non-finite score")
            spm.pieces.append(piece)
            spm.scores.append(score)
            spm.types.append(ptype)
            if len(spm.pieces) > MAX_VOCAB:
                raise InputError(f"{where}: more than {MAX_VOCAB} pieces")
        elif number == 2 and wire == 2:  # TrainerSpec
            for n2, w2, v2 in _pb_fields(value, where):
                if w2 != 0:
                    continue
                if n2 == 3:
                    spm.model_type = v2
                elif n2 == 35:
                    spm.byte_fallback = bool(v2)
                elif n2 in (40, 41, 42, 43):
                    setattr(spm, {40: "unk_id", 41: "bos_id", 42: "eos_id", 43: "pad_id"}[n2], _int32(v2))
        elif number == 3 and wire == 2:  # NormalizerSpec
            for n2, w2, v2 in _pb_fields(value, where):
                if n2 == 3 and w2 == 0:
                    spm.add_dummy_prefix = bool(v2)
                elif n2 == 4 and w2 == 0:
                    spm.remove_extra_whitespaces = bool(v2)
    if not spm.pieces:
        raise InputError(f"{where}: not a SentencePiece model (no pieces)")
    return spm


def _spec_from_spm(spm: _Spm, path: Path, root: Path, tok_cfg: dict, tok_json: dict | None,
                   vocab_size: int | None) -> TokenizerSpec:
    tokens, scores, types = list(spm.pieces), list(spm.scores), list(spm.types)
    notes: list[str] = []
    extra: list[tuple[int, str, bool]] = []
    added_file = root / "added_tokens.json"
    if added_file.is_file():
        raw = read_json(added_file, "added tokens")
        if not isinstance(raw, dict) or not all(isinstance(k, str) and type(v) is int for k, v in raw.items()):
            raise InputError(f"{added_file}: expected an object of token -> id")
        extra += [(v, k, False) for k, v in raw.items()]
    extra += _added_tokens(tok_json, root / "tokenizer.json")
    extra += _added_tokens_decoder(tok_cfg, root)
    n = vocab_size if vocab_size is not None else max([len(tokens)] + [tid + 1 for tid, _, _ in extra])
    if len(tokens) > n:
        notes.append(f"{path}: {len(tokens) - n} pieces beyond config vocab_size {n} were dropped")
        del tokens[n:], scores[n:], types[n:]
    while len(tokens) < n:
        tokens.append(f"[PAD{len(tokens)}]")
        scores.append(SPM_PAD_SCORE)
        types.append(UNUSED)
    for tid, content, special in extra:
        if not 0 <= tid < n:
            notes.append(f"added token {content!r} (id {tid}) is outside the vocabulary of {n}; ignored")
            continue
        if not special and not _looks_special(content):
            content = content.replace(SPACE_MARK, " ")  # llama.cpp matches user-defined tokens on raw text
        # As llama.cpp's converter: the added-token entry decides, over the piece's own type (<unk> included)
        types[tid] = CONTROL if special or _looks_special(content) else USER_DEFINED
        tokens[tid] = content
        scores[tid] = SPM_PAD_SCORE
    if spm.model_type != 2:
        kind = {1: "unigram", 3: "word", 4: "char"}.get(spm.model_type, str(spm.model_type))
        notes.append(f"{path}: a SentencePiece {kind} model; llama.cpp tokenizes it with BPE-style merges "
                     "by score, which can differ from the reference tokenizer")
    spec = TokenizerSpec(model="llama", tokens=tokens, token_types=types, scores=scores, pre="default",
                         source=str(path), notes=notes)
    spec.add_space_prefix = spm.add_dummy_prefix
    apf = _bool_or_none(tok_cfg.get("add_prefix_space"), f"{root}/tokenizer_config.json", "add_prefix_space")
    if apf is not None:
        spec.add_space_prefix = apf
    spec.remove_extra_whitespaces = spm.remove_extra_whitespaces
    if spm.remove_extra_whitespaces:
        notes.append(f"{path}: the model collapses whitespace runs; llama.cpp's SentencePiece tokenizer does not")
    for name in ("unk_id", "bos_id", "eos_id", "pad_id"):
        v = getattr(spm, name)
        if 0 <= v < n:
            setattr(spec, name, v)
    return spec


# ---------------------------------------------------------------------------------------------
# tokenizer.json


def _model_section(tok_json: dict, path: Path) -> dict:
    model = tok_json.get("model")
    if not isinstance(model, dict):
        raise InputError(f"{path}: has no \"model\" object")
    mtype = model.get("type", "BPE" if "merges" in model else None)
    if mtype != "BPE":
        raise UnsupportedError(f"{path}: a {mtype or 'untyped'} tokenizer model; only BPE (and SentencePiece "
                               "tokenizer.model) can be converted")
    return model


def _components(node: Any, depth: int = 0) -> list[dict]:
    """Flatten a (possibly nested) Sequence of normalizers / pre-tokenizers / decoders."""
    if not isinstance(node, dict) or depth > 8:
        return []
    if node.get("type") == "Sequence":
        children = node.get("pretokenizers") or node.get("normalizers") or node.get("decoders") or []
        if not isinstance(children, list):
            return []
        return [c for child in children[:64] for c in _components(child, depth + 1)]
    return [node]


def _is_byte_level(tok_json: dict) -> bool:
    return any(c.get("type") == "ByteLevel" for key in ("pre_tokenizer", "decoder") for c in _components(tok_json.get(key)))


def _is_spm_style(tok_json: dict, model: dict) -> bool:
    if model.get("byte_fallback") is True:
        return True
    for c in _components(tok_json.get("normalizer")):
        if c.get("type") == "Replace" and c.get("content") == SPACE_MARK:
            return True
    return any(c.get("type") == "Metaspace" for c in _components(tok_json.get("pre_tokenizer")))


def _vocab(model: dict, path: Path) -> dict[str, int]:
    vocab = model.get("vocab")
    if not isinstance(vocab, dict):
        raise InputError(f"{path}: model.vocab must be an object of token -> id")
    if len(vocab) > MAX_VOCAB:
        raise InputError(f"{path}: {len(vocab)} vocabulary entries, over the {MAX_VOCAB} limit")
    if len(set(vocab.values())) != len(vocab):
        raise InputError(f"{path}: two vocabulary entries share an id")
    for token, tid in vocab.items():
        if type(tid) is not int or not 0 <= tid < MAX_VOCAB:
            raise InputError(f"{path}: token {token[:40]!r} has id {tid!r} (must be an integer in 0..{MAX_VOCAB - 1})")
        if len(token) > MAX_TOKEN_BYTES:
            raise InputError(f"{path}: token with id {tid} is {len(token)} characters long")
    return vocab


def _merge_pairs(model: dict, path: Path) -> list[tuple[str, str]]:
    raw = model.get("merges", [])
    if not isinstance(raw, list) or len(raw) > MAX_MERGES:
        raise InputError(f"{path}: model.merges must be a list of at most {MAX_MERGES} merges")
    pairs = []
    for i, m in enumerate(raw):
        if isinstance(m, str):
            cut = m.find(" ", 1)
            if cut < 0:
                raise InputError(f"{path}: merge {i} {m[:40]!r} has no space between its two parts")
            pairs.append((m[:cut], m[cut + 1:]))
        elif isinstance(m, list) and len(m) == 2 and all(isinstance(p, str) for p in m):
            pairs.append((m[0], m[1]))
        else:
            raise InputError(f"{path}: merge {i} must be \"a b\" or [\"a\", \"b\"]")
    return pairs


def _token_table(vocab: dict[str, int], added: list[tuple[int, str, bool]], vocab_size: int | None,
                 path: Path) -> tuple[list[str | None], int]:
    top = max([-1] + list(vocab.values()) + [tid for tid, _, _ in added])
    n = top + 1
    if vocab_size is not None:
        if vocab_size < n:
            raise InputError(f"{path}: token id {top} does not fit config.json vocab_size {vocab_size}")
        n = vocab_size
    table: list[str | None] = [None] * n
    for token, tid in vocab.items():
        table[tid] = token
    return table, n


def _spec_from_tokenizer_json(tok_json: dict, path: Path, tok_cfg: dict, vocab_size: int | None) -> TokenizerSpec:
    model = _model_section(tok_json, path)
    vocab = _vocab(model, path)
    pairs = _merge_pairs(model, path)
    added = _added_tokens(tok_json, path)
    table, n = _token_table(vocab, added, vocab_size, path)
    spm_style = _is_spm_style(tok_json, model)
    if not spm_style and not _is_byte_level(tok_json):
        raise UnsupportedError(f"{path}: a BPE tokenizer that is neither byte-level nor SentencePiece-style; "
                               "llama.cpp cannot reproduce it")
    types = [NORMAL] * n
    for i, t in enumerate(table):
        if t is None:
            table[i] = f"[PAD{i}]"
            types[i] = UNUSED
    for tid, content, special in added:
        if special or _looks_special(content):
            types[tid] = CONTROL
        else:
            if spm_style:
                content = content.replace(SPACE_MARK, " ")
            types[tid] = USER_DEFINED
        table[tid] = content
    tokens: list[str] = table  # type: ignore[assignment]
    if not spm_style:
        merges = [f"{_space_safe(a)} {_space_safe(b)}" for a, b in pairs]
        spec = TokenizerSpec(model="gpt2", tokens=tokens, token_types=types, merges=merges, source=str(path))
        kinds = [str(c.get("type")) for c in _components(tok_json.get("normalizer"))]
        if any(k not in ("NFC", "NFKC") for k in kinds):  # NFC only matters for unnormalised input
            spec.notes.append(f"{path}: llama.cpp does not apply the normalizer ({', '.join(kinds)}); "
                              "text it changes will tokenize differently")
        return spec
    return _spm_style_spec(tok_json, model, path, tokens, types, pairs, vocab, tok_cfg)


def _space_safe(part: str) -> str:
    # a space inside a merge part would split it wrongly in GGUF's "a b" form; gguf-py's encoding
    return part.replace(" ", chr(ord(" ") + 256))


def _spm_style_spec(tok_json: dict, model: dict, path: Path, tokens: list[str], types: list[int],
                    pairs: list[tuple[str, str]], vocab: dict[str, int], tok_cfg: dict) -> TokenizerSpec:
    """A SentencePiece vocabulary saved as HF BPE: llama.cpp's SPM merges by score, so rank becomes score."""
    scores = [0.0] * len(tokens)
    reached = set()
    for rank, (a, b) in enumerate(pairs):
        tid = vocab.get(a + b)
        if tid is not None and tid not in reached:
            reached.add(tid)
            scores[tid] = -float(rank)
    byte_re = re.compile(r"<0x[0-9A-Fa-f]{2}>")
    for tid, t in enumerate(tokens):
        if types[tid] == NORMAL and byte_re.fullmatch(t):
            types[tid] = BYTE
        elif types[tid] == NORMAL and tid not in reached and len(t) > 1:
            scores[tid] = -1e9  # never built by a merge: make it the last resort
        elif types[tid] in (CONTROL, USER_DEFINED, UNUSED):
            scores[tid] = SPM_PAD_SCORE
    unk = model.get("unk_token")
    spec = TokenizerSpec(model="llama", tokens=tokens, token_types=types, scores=scores, pre="default",
                         source=str(path))
    if isinstance(unk, str) and unk in vocab:
        spec.unk_id = vocab[unk]
        types[spec.unk_id] = UNKNOWN
    prefix = False
    for c in _components(tok_json.get("normalizer")):
        if c.get("type") == "Prepend" and c.get("prepend") == SPACE_MARK:
            prefix = True
    for c in _components(tok_json.get("pre_tokenizer")):
        if c.get("type") == "Metaspace":
            scheme = c.get("prepend_scheme")
            prefix = scheme in ("first", "always") if scheme is not None else bool(c.get("add_prefix_space", True))
    spec.add_space_prefix = prefix
    apf = tok_cfg.get("add_prefix_space")
    if isinstance(apf, bool):
        spec.add_space_prefix = apf
    spec.notes.append(f"{path}: SentencePiece-style BPE without tokenizer.model; scores derived from merge ranks")
    return spec


# ---------------------------------------------------------------------------------------------
# special tokens, add_bos / add_eos, chat templates

# Token texts llama.cpp already treats as end-of-generation on its own (src/llama-vocab.cpp).
LLAMA_CPP_EOG_TEXTS = frozenset((
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>",
    "<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]",
    "<|end_of_text|>", "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>",
    "<\uff5cend\u2581of\u2581sentence\uff5c>", "[e~[",
))


def _token_text(entry: Any, where: str, what: str) -> str | None:
    if entry is None:
        return None
    if isinstance(entry, str):
        return entry
    if isinstance(entry, dict) and isinstance(entry.get("content"), str):
        return entry["content"]
    raise InputError(f"{where}: {what} must be a string or {{\"content\": ...}}")


def _ids(value: Any, where: str, what: str) -> list[int]:
    if value is None:
        return []
    if type(value) is int:
        return [value]
    if isinstance(value, list) and len(value) <= 1024 and all(type(v) is int for v in value):
        return list(value)
    raise InputError(f"{where}: {what} must be an integer or a list of integers")


def _apply_special_ids(spec: TokenizerSpec, root: Path, tok_cfg: dict, tok_json: dict | None, config: dict) -> None:
    """tokenizer_config.json names first (what the chat template uses), then config.json, then
    generation_config.json; an eos list keeps its first id as eos and the rest as extra stop ids."""
    n = len(spec.tokens)
    lookup: dict[str, int] = {}
    for i, t in enumerate(spec.tokens):
        lookup.setdefault(t, i)
    for tid, content, _ in _added_tokens(tok_json, root / "tokenizer.json"):
        if 0 <= tid < n:
            lookup[content] = tid
    cfg_where = f"{root}/tokenizer_config.json"
    found: dict[str, int] = {}
    for kind in ("bos", "eos", "unk", "pad", "sep", "mask", "cls"):
        text = _token_text(tok_cfg.get(f"{kind}_token"), cfg_where, f"{kind}_token")
        if text is None:
            continue
        if text in lookup:
            found[kind] = lookup[text]
        else:
            spec.notes.append(f"{cfg_where}: {kind}_token {text!r} is not in the vocabulary; ignored")
    if "bos" not in found and "cls" in found:
        found["bos"] = found["cls"]
    if "eos" not in found and "sep" in found:
        found["eos"] = found["sep"]
    eos_more: list[int] = []
    gen = _optional_json(root / "generation_config.json", "generation config")
    sources = [(f"{root}/config.json", config)]
    if isinstance(config.get("text_config"), dict):
        sources.append((f"{root}/config.json text_config", config["text_config"]))
    sources.append((f"{root}/generation_config.json", gen))
    for where, src in sources:
        for kind in ("bos", "eos", "pad", "unk", "sep", "mask"):
            ids = _ids(src.get(f"{kind}_token_id"), where, f"{kind}_token_id")
            ids = [i for i in ids if 0 <= i < n] or ([] if not ids else _note_range(spec, where, kind, ids, n))
            if not ids:
                continue
            found.setdefault(kind, ids[0])
            if kind == "eos":
                eos_more += ids
    for kind, attr in (("bos", "bos_id"), ("eos", "eos_id"), ("unk", "unk_id"), ("pad", "pad_id"),
                       ("sep", "sep_id"), ("mask", "mask_id")):
        if kind in found:
            setattr(spec, attr, found[kind])
    spec.extra_eos_ids = sorted({i for i in eos_more if i != spec.eos_id})


def _note_range(spec: TokenizerSpec, where: str, kind: str, ids: list[int], n: int) -> list[int]:
    spec.notes.append(f"{where}: {kind}_token_id {ids} is outside the vocabulary of {n}; ignored")
    return []


def _mark_extra_eos(spec: TokenizerSpec) -> None:
    """Make every extra stop id end generation in llama.cpp: it recognises most by their text; the rest
    go into the eot / eom slots (the only other per-id stop keys GGUF has)."""
    for tid in spec.extra_eos_ids:
        if spec.tokens[tid] in LLAMA_CPP_EOG_TEXTS or tid in (spec.eot_id, spec.eom_id):
            continue
        if spec.eot_id is None:
            spec.eot_id = tid
        elif spec.eom_id is None:
            spec.eom_id = tid
        else:
            spec.notes.append(f"stop token {spec.tokens[tid]!r} (id {tid}) has no GGUF key left; "
                              "llama.cpp will not stop on it")


def _special_in_template(item: Any) -> str | None:
    token = item.get("SpecialToken") if isinstance(item, dict) else None
    return token.get("id") if isinstance(token, dict) and isinstance(token.get("id"), str) else None


def _template_flags(tok_json: dict | None, bos: str | None, eos: str | None,
                    spm: bool) -> tuple[bool | None, bool | None]:
    """add_bos / add_eos as the tokenizer.json post-processor applies them. None when the file does not
    say: SentencePiece model classes then add BOS by default (so does llama.cpp)."""
    if tok_json is None:
        return None, None
    procs = _components_any(tok_json.get("post_processor"))
    if not procs:
        return (None, None) if spm else (False, False)
    add_bos = add_eos = False
    for p in procs:
        kind = p.get("type")
        if kind in ("RobertaProcessing", "BertProcessing"):
            return True, True
        if kind == "TemplateProcessing" and isinstance(p.get("single"), list) and p["single"]:
            single = p["single"]
            first, last = _special_in_template(single[0]), _special_in_template(single[-1])
            add_bos = first is not None and (bos is None or first == bos)
            add_eos = last is not None and len(single) > 1 and (eos is None or last == eos)
    return add_bos, add_eos


def _components_any(node: Any) -> list[dict]:
    if not isinstance(node, dict):
        return []
    if node.get("type") == "Sequence" and isinstance(node.get("processors"), list):
        return [p for p in node["processors"][:64] if isinstance(p, dict)]
    return [node]


def _apply_add_flags(spec: TokenizerSpec, tok_cfg: dict, tok_json: dict | None, json_path: Path) -> None:
    where = str(json_path.parent / "tokenizer_config.json")
    add_bos = _bool_or_none(tok_cfg.get("add_bos_token"), where, "add_bos_token")
    add_eos = _bool_or_none(tok_cfg.get("add_eos_token"), where, "add_eos_token")
    bos = spec.tokens[spec.bos_id] if spec.bos_id is not None else None
    eos = spec.tokens[spec.eos_id] if spec.eos_id is not None else None
    tmpl_bos, tmpl_eos = _template_flags(tok_json, bos, eos, spec.model == "llama")
    spec.add_bos = add_bos if add_bos is not None else tmpl_bos
    spec.add_eos = add_eos if add_eos is not None else tmpl_eos
    if spec.add_bos and spec.bos_id is None:
        spec.notes.append("the tokenizer adds a BOS token but none is defined; add_bos turned off")
        spec.add_bos = False
    if spec.add_eos and spec.eos_id is None:
        spec.add_eos = False


def _read_template(path: Path) -> str:
    try:
        size = path.stat().st_size
        if size > MAX_TEMPLATE_BYTES:
            raise InputError(f"{path}: chat template is {size} bytes, over the {MAX_TEMPLATE_BYTES}-byte limit")
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: chat template is not UTF-8 (byte {e.start})") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read chat template: {e.strerror}") from None


def _template_name(name: str) -> str:
    return "".join(c if c.isascii() and c.isalnum() else "_" for c in name)


def _templates_from_value(value: Any, where: str) -> tuple[str | None, dict[str, str]]:
    if value is None:
        return None, {}
    if isinstance(value, str):
        if len(value) > MAX_TEMPLATE_BYTES:
            raise InputError(f"{where}: chat_template is over {MAX_TEMPLATE_BYTES} characters")
        return value, {}
    if isinstance(value, list) and len(value) <= MAX_TEMPLATES:
        main, named = None, {}
        for i, item in enumerate(value):
            if not (isinstance(item, dict) and isinstance(item.get("name"), str) and isinstance(item.get("template"), str)):
                raise InputError(f"{where}: chat_template[{i}] must be {{\"name\": str, \"template\": str}}")
            if len(item["template"]) > MAX_TEMPLATE_BYTES:
                raise InputError(f"{where}: chat_template {item['name']!r} is over {MAX_TEMPLATE_BYTES} characters")
            if item["name"] == "default":
                main = item["template"]
            elif _template_name(item["name"]):
                named[_template_name(item["name"])] = item["template"]
        return main, named
    raise InputError(f"{where}: chat_template must be a string or a list of {{name, template}}")


def _chat_templates(root: Path, tok_cfg: dict) -> tuple[str | None, dict[str, str]]:
    """chat_template.jinja (what transformers loads first), then chat_template.json, then
    tokenizer_config.json; extra templates become tokenizer.chat_template.<name>."""
    jinja = root / "chat_template.jinja"
    if jinja.is_file():
        main = _read_template(jinja)
        named = {}
        extra_dir = root / "additional_chat_templates"
        if extra_dir.is_dir():
            for p in sorted(extra_dir.glob("*.jinja"))[:MAX_TEMPLATES]:
                if _template_name(p.stem):
                    named[_template_name(p.stem)] = _read_template(p)
        return main, named
    js = root / "chat_template.json"
    if js.is_file():
        data = read_json(js, "chat template")
        if not isinstance(data, dict):
            raise InputError(f"{js}: expected an object with \"chat_template\"")
        return _templates_from_value(data.get("chat_template"), str(js))
    return _templates_from_value(tok_cfg.get("chat_template"), f"{root}/tokenizer_config.json")


# ---------------------------------------------------------------------------------------------
# BPE pre-tokenizer: forced, by hash (llama.cpp's way), or by structure


def _canonical_regex(regex: str) -> str:
    return regex.replace(_CONTRACTIONS_CPP, _CONTRACTIONS_HF)


def pre_tokenizer_signature(node: Any) -> tuple | None:
    """A comparable form of a tokenizer.json ``pre_tokenizer``; None when it has parts we cannot compare."""
    steps: list[tuple] = []
    for c in _components(node):
        kind = c.get("type")
        if kind == "ByteLevel":
            if c.get("add_prefix_space", True):
                return None  # llama.cpp's BPE never adds a prefix space
            if c.get("use_regex", True):
                steps.append(("split", GPT2_REGEX))
            steps.append(("bytelevel",))
        elif kind == "Split":
            pattern = c.get("pattern") if isinstance(c.get("pattern"), dict) else {}
            if c.get("invert") or str(c.get("behavior", "")).lower() != "isolated":
                return None
            if isinstance(pattern.get("Regex"), str):
                steps.append(("split", _canonical_regex(pattern["Regex"])))
            elif isinstance(pattern.get("String"), str):
                steps.append(("split", re.escape(pattern["String"])))
            else:
                return None
        elif kind == "Digits":
            steps.append(("digits", bool(c.get("individual_digits", False))))
        elif kind == "Punctuation":
            steps.append(("punct", str(c.get("behavior", "Isolated")).lower()))
        else:
            return None
    return tuple(steps) if steps else None


def _signature_table() -> dict[tuple, str]:
    table = {}
    for group in GROUP_DEFAULT_NAME:
        sig = pre_tokenizer_signature({"type": "Sequence", "pretokenizers": hf_pre_tokenizer(group)})
        if sig is not None:
            table.setdefault(sig, group)
    return table


_SIGNATURES = _signature_table()


def _name_for_group(group: str, ignore_merges: bool, clean_spaces: bool | None) -> str:
    if group == "llama3":
        return "llama-bpe" if ignore_merges else "dbrx"
    if group == "starcoder" and clean_spaces is False:
        return "smollm"
    if group == "qwen2" and clean_spaces is True:
        return "stablelm2"
    return GROUP_DEFAULT_NAME[group]


def _check_hashes(json_path: Path, spec: TokenizerSpec) -> list[str]:
    """sha256 of the check text's ids, the way llama.cpp's converter computes them (and two variants:
    without the post-processor's specials, and with the specials tokenizer_config.json asks for)."""
    try:
        from tokenizers import Tokenizer
    except ImportError:  # pragma: no cover - tokenizers is a dependency
        return []
    try:
        tk = Tokenizer.from_file(str(json_path))
        with_special = tk.encode(CHK_TXT).ids
        bare = tk.encode(CHK_TXT, add_special_tokens=False).ids
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException:  # noqa: BLE001 - the Rust side rejects (or panics on) what it cannot run
        return []
    asked = ([spec.bos_id] if spec.add_bos and spec.bos_id is not None else []) + bare
    asked += [spec.eos_id] if spec.add_eos and spec.eos_id is not None else []
    return [hashlib.sha256(str(ids).encode()).hexdigest() for ids in (with_special, asked, bare)]


def _choose_pre(spec: TokenizerSpec, tok_json: dict | None, json_path: Path, tok_cfg: dict,
                forced: str | None) -> tuple[str, str]:
    if forced is not None:
        return forced, "forced"
    node = (tok_json or {}).get("pre_tokenizer")
    sig = pre_tokenizer_signature(node)
    group = _SIGNATURES.get(sig) if sig is not None else None
    by_structure = None
    if group is not None:
        model = (tok_json or {}).get("model") or {}
        clean = tok_cfg.get("clean_up_tokenization_spaces")
        by_structure = _name_for_group(group, bool(model.get("ignore_merges", False)),
                                       clean if isinstance(clean, bool) else None)
    hashes = _check_hashes(json_path, spec)
    by_hash = next((PRE_HASHES[h] for h in hashes if h in PRE_HASHES), None)
    if by_hash is not None:
        hashed_group = PRE_NAMES.get(by_hash, (None,))[0]
        if by_structure is None or hashed_group == group:
            return by_hash, "hash"
        # the check text cannot tell some splits apart (e.g. qwen2 vs qwen35, which differ only on
        # combining marks); the pre_tokenizer itself says how this tokenizer splits
        spec.notes.append(f"{json_path}: check hash says {by_hash!r}, the pre_tokenizer says {by_structure!r}; "
                          "using the pre_tokenizer")
        return by_structure, "structure"
    if by_structure is not None:
        return by_structure, "structure"
    seen = _describe(node)
    raise UnsupportedError(
        f"{json_path}: unknown BPE pre-tokenizer (check hash {hashes[0][:16] if hashes else 'n/a'}, "
        f"pre_tokenizer {seen}); if you know which llama.cpp pre-tokenizer splits text the same way, "
        f"pass it with pre=NAME (CLI: --tokenizer-pre NAME), e.g. one of: llama-bpe, qwen2, gpt-2, smollm, "
        f"starcoder, gpt-4o, tekken, deepseek-llm"
    )


def _describe(node: Any) -> str:
    parts = []
    for c in _components(node):
        kind = c.get("type", "?")
        if kind == "Split" and isinstance(c.get("pattern"), dict):
            pat = c["pattern"].get("Regex", c["pattern"].get("String", "?"))
            pat = str(pat)
            parts.append(f"Split({pat[:60] + '...' if len(pat) > 60 else pat!r})")
        elif kind == "ByteLevel":
            parts.append(f"ByteLevel(use_regex={c.get('use_regex', True)})")
        elif kind == "Digits":
            parts.append(f"Digits(individual={c.get('individual_digits', False)})")
        else:
            parts.append(str(kind))
    return "[" + ", ".join(parts) + "]" if parts else "none"

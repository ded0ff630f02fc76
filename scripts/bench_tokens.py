#!/usr/bin/env python3
"""Token counting: nexus (Rust) and tiktoken-rs next to Python tiktoken, on the same text.

Run by scripts/bench.sh; alone: python3 scripts/bench_tokens.py --bench-bin target/release/nexus-bench.

Creates a venv (target/bench/venv) with `tiktoken` and the `litellm` wheel (without its
dependencies: only its bundled BPE files are used), points TIKTOKEN_CACHE_DIR at litellm's
tokenizer folder so tiktoken works offline, builds three corpora (English, Chinese, mixed), then
for each corpus and encoding counts every document one call at a time in Python and through
`nexus-bench tokens`, checks that the per-document counts agree exactly, and prints one JSON line
per (text, encoding) with tokens per CPU second. Exits non-zero when any count differs.
"""

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def ensure_venv(venv: Path) -> Path:
    py = venv / "bin" / "python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    probe = "import importlib.util as u, tiktoken; assert u.find_spec('litellm')"
    if subprocess.run([str(py), "-c", probe], capture_output=True).returncode != 0:
        pip = [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        subprocess.run(pip + ["tiktoken"], check=True)
        subprocess.run(pip + ["--no-deps", "litellm"], check=True)
    return py


# ---- corpora -----------------------------------------------------------------------------------

ZH = [
    "人工智能模型聚合平台把多个服务提供商统一管理起来，应用程序只需要一个兼容的接口地址。",
    "它支持实时流式对话、令牌计算和使用统计，并且可以在管理界面中查看每个模型的调用情况。",
    "当某个服务商连续失败时，网关会自动切换到另一个服务商，并在恢复后重新加入轮询。",
    "今天北京的天气晴朗，最高气温二十六度，适合去公园散步或者骑自行车。",
    "请用三句话总结这篇文章的主要观点，并给出你的理由。",
    "数据库每隔半秒提交一次批量记录，因此请求路径从来不会等待磁盘写入。",
    "我们在周末组织了一次读书会，大家分享了最近读过的小说和历史书籍。",
    "这个函数的时间复杂度是线性的，但在最坏情况下会退化为平方级别。",
    "为了保护用户隐私，上游密钥在磁盘上始终以加密形式保存，日志中也不会出现明文。",
    "长江是中国最长的河流，全长约六千三百公里，流经十一个省级行政区。",
    "如果请求超过了速率限制，服务器会返回四百二十九状态码，并附带重试等待时间。",
    "学习一门新的编程语言时，最好的方法是动手写一些小项目，而不是只看文档。",
    "会议将于下午三点在二楼的大会议室举行，请各部门负责人准时参加。",
    "春节期间，很多人会回到家乡与家人团聚，一起包饺子、看晚会、放烟花。",
    "模型的上下文窗口越大，能够处理的文档就越长，但推理成本也会相应增加。",
    "《红楼梦》是中国古典小说的巅峰之作，描写了贾、史、王、薛四大家族的兴衰。",
    "用户反馈说页面加载太慢，我们决定先优化图片大小，再考虑使用内容分发网络。",
    "“你今天吃饭了吗？”这是很多地方常见的问候语，并不一定真的在问吃饭的事。",
    "统计面板按小时和按天汇总请求数、错误数、提示令牌和完成令牌。",
    "在测试环境中，我们使用一个模拟的上游服务来重现各种失败情况。",
]

CODE = [
    "fn main() {\n    let v: Vec<u32> = (0..10).map(|x| x * x).collect();\n    println!(\"{:?}\", v);\n}\n",
    "def fib(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a\n",
    "SELECT model, count(*) AS requests\n  FROM usage\n WHERE ts_ms >= ?1\n GROUP BY model\n ORDER BY requests DESC;\n",
    "curl -sS http://127.0.0.1:8000/v1/chat/completions \\\n  -H 'Authorization: Bearer sk-...' \\\n  -d '{\"model\":\"gpt-4o\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}'\n",
    "{\n  \"id\": \"chatcmpl-123\",\n  \"object\": \"chat.completion\",\n  \"usage\": {\"prompt_tokens\": 12, \"completion_tokens\": 34}\n}\n",
]

EMOJI = ["👍", "🎉", "🚀", "😀", "🇨🇳", "👩‍💻", "✅", "🔥", "❤️", "🤖"]

ENGLISH_MODULES = [
    "argparse", "asyncio", "collections", "configparser", "csv", "dataclasses", "datetime",
    "decimal", "email.message", "enum", "functools", "http.client", "http.server", "inspect",
    "ipaddress", "itertools", "json", "logging", "os", "pathlib", "pickle", "random", "re",
    "shutil", "socket", "sqlite3", "statistics", "string", "subprocess", "tarfile", "textwrap",
    "threading", "typing", "unittest", "urllib.parse", "urllib.request", "uuid", "zipfile",
]


def english_docs():
    """Docstrings of the standard library: real English prose (fixed for a Python version)."""
    import importlib
    import inspect

    docs, seen = [], set()
    for name in ENGLISH_MODULES:
        try:
            mod = importlib.import_module(name)
        except ImportError:
            continue
        objs = [mod] + [getattr(mod, a) for a in sorted(dir(mod)) if not a.startswith("_")]
        for o in objs:
            d = inspect.getdoc(o) if (inspect.ismodule(o) or inspect.isclass(o) or inspect.isroutine(o)) else None
            if d and len(d) > 80 and d not in seen:
                seen.add(d)
                docs.append(d)
    return docs


def chinese_docs(rng, n):
    return ["".join(rng.choice(ZH) for _ in range(rng.randint(2, 12))) for _ in range(n)]


def mixed_docs(rng, english, n):
    sample = (ROOT / "nexus" / "src" / "tokens_samples" / "mixed.txt").read_text(encoding="utf-8").splitlines()
    out = []
    for _ in range(n):
        parts = []
        for _ in range(rng.randint(3, 10)):
            k = rng.random()
            if k < 0.3:
                parts.append(rng.choice(ZH))
            elif k < 0.55:
                e = rng.choice(english)
                i = rng.randrange(max(1, len(e) - 300))
                parts.append(e[i : i + 300])
            elif k < 0.7:
                parts.append(rng.choice(CODE))
            elif k < 0.85:
                parts.append(rng.choice(sample))
            else:
                parts.append(" ".join(rng.choice(EMOJI) for _ in range(rng.randint(1, 4))) + "  \n\n   ")
        out.append(("\n" if rng.random() < 0.5 else " ").join(parts))
    return out


def trim(docs, limit):
    out, size = [], 0
    for d in docs:
        if size >= limit:
            break
        out.append(d)
        size += len(d.encode())
    return out


# ---- timing ------------------------------------------------------------------------------------


def time_python(enc, docs, reps):
    best, counts = None, None
    for _ in range(reps):
        t = time.thread_time()
        c = [len(enc.encode_ordinary(d)) for d in docs]
        dt = time.thread_time() - t
        best = dt if best is None else min(best, dt)
        counts = c
    return counts, max(best, 1e-9)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bench-bin", default=str(ROOT / "target" / "release" / "nexus-bench"))
    ap.add_argument("--out", default=str(ROOT / "target" / "bench" / "tokens"))
    ap.add_argument("--smoke", action="store_true", help="small corpora, one repetition")
    ap.add_argument("--in-venv", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if not args.in_venv:
        py = ensure_venv(ROOT / "target" / "bench" / "venv")
        spec = subprocess.run(
            [str(py), "-c", "import importlib.util as u; print(u.find_spec('litellm').submodule_search_locations[0])"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()
        env = dict(os.environ, TIKTOKEN_CACHE_DIR=str(Path(spec) / "litellm_core_utils" / "tokenizers"))
        os.execve(str(py), [str(py), __file__, "--in-venv"] + sys.argv[1:], env)

    import tiktoken

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(8)
    limit = 60_000 if args.smoke else 1_500_000
    reps = 1 if args.smoke else 3
    english = english_docs()
    eng = english * (1 + limit // max(1, sum(len(d) for d in english)))
    corpora = {
        "english": trim(eng, limit),
        "chinese": trim(chinese_docs(rng, 100_000), limit),
        "mixed": trim(mixed_docs(rng, english, 100_000), limit),
    }
    failed = False
    for text, docs in corpora.items():
        path = out / f"tokens-{text}.json"
        path.write_text(json.dumps(docs, ensure_ascii=False), encoding="utf-8")
        nbytes = sum(len(d.encode()) for d in docs)
        for name in ["cl100k_base", "o200k_base"]:
            enc = tiktoken.get_encoding(name)
            enc.encode_ordinary("warm up")
            py_counts, py_cpu = time_python(enc, docs, reps)
            rust = {}
            for impl in ["nexus", "tiktoken-rs"]:
                counts_file = out / f"counts-{text}-{name}-{impl}.txt"
                r = subprocess.run(
                    [args.bench_bin, "tokens", "--input", str(path), "--encoding", name, "--impl", impl,
                     "--reps", str(reps), "--counts-out", str(counts_file)],
                    capture_output=True, text=True, check=True,
                )
                res = json.loads(r.stdout)
                res["counts"] = [int(x) for x in counts_file.read_text().split()]
                rust[impl] = res
            equal = all(rust[i]["counts"] == py_counts for i in rust)
            if not equal:
                failed = True
                for i in rust:
                    bad = [k for k, (a, b) in enumerate(zip(rust[i]["counts"], py_counts)) if a != b]
                    if bad:
                        print(f"{text}/{name}/{i}: {len(bad)} documents differ, first {bad[0]}: "
                              f"{rust[i]['counts'][bad[0]]} vs Python {py_counts[bad[0]]}", file=sys.stderr)
            tokens = sum(py_counts)
            row = {
                "bench": "tokens", "text": text, "encoding": name, "docs": len(docs), "bytes": nbytes,
                "tokens": tokens, "counts_equal": equal,
                "python_tps": tokens / py_cpu, "python_mbps": nbytes / 1e6 / py_cpu,
                "tiktoken_rs_tps": rust["tiktoken-rs"]["tokens_per_cpu_s"],
                "nexus_tps": rust["nexus"]["tokens_per_cpu_s"], "nexus_mbps": rust["nexus"]["mb_per_cpu_s"],
                "nexus_table_rss_kb": rust["nexus"].get("table_rss_kb"),
                "tiktoken_rs_table_rss_kb": rust["tiktoken-rs"].get("table_rss_kb"),
                "tiktoken_version": tiktoken.__version__ if hasattr(tiktoken, "__version__") else None,
            }
            print(json.dumps(row), flush=True)
            print(f"  {text:8} {name:12} {tokens:>9,} tokens  Python {row['python_tps']/1e6:5.2f} M/s  "
                  f"tiktoken-rs {row['tiktoken_rs_tps']/1e6:5.2f} M/s  nexus {row['nexus_tps']/1e6:5.2f} M/s "
                  f"({row['nexus_tps']/row['python_tps']:.2f}x)  counts {'equal' if equal else 'DIFFER'}",
                  file=sys.stderr, flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()

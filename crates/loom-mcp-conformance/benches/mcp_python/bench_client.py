"""Per-call cost of the official Python MCP client (`mcp` on PyPI) over stdio.

Usage: python bench_client.py N WARMUP COMMAND [ARGS...]

Starts COMMAND as an MCP server over stdio, initializes, makes WARMUP calls of the tool `echo`
(argument {"message": "hello"}), then N timed sequential calls, and prints one JSON object:
{"client": "python-mcp <version>", "n": N, "wall_ns": [...per call...], "cpu_ns": total client
process CPU time over the N calls (time.process_time_ns: every thread of this process, not the
server's)}. The Rust bench (mcp_stdio_overhead) runs this and reports it beside Loom's numbers.
"""

import asyncio
import json
import sys
import time
from importlib.metadata import version

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client


async def main() -> None:
    n, warmup, command, args = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4:]
    params = StdioServerParameters(command=command, args=args)
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            for _ in range(warmup):
                await session.call_tool("echo", {"message": "hello"})
            wall = []
            cpu0 = time.process_time_ns()
            for _ in range(n):
                t0 = time.perf_counter_ns()
                result = await session.call_tool("echo", {"message": "hello"})
                wall.append(time.perf_counter_ns() - t0)
                if result.is_error:
                    raise SystemExit(f"echo failed: {result}")
            cpu = time.process_time_ns() - cpu0
    print(json.dumps({"client": f"python-mcp {version('mcp')}", "n": n, "wall_ns": wall, "cpu_ns": cpu}))


if __name__ == "__main__":
    asyncio.run(main())

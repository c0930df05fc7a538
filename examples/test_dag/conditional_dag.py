"""Calculator demo app for Ray Serve (Ray 2.x API).

HTTP: POST /calc with a JSON array [OP, N]; OP is "ADD" (N + increment) or
"MUL" (N * factor). The answer is a JSON string, e.g. ["MUL", 3] with
factor 5 gives "15 pizzas please!".

Adder reads `increment` and Multiplier reads `factor` from `user_config`.

CPU note: a deployment with no `num_cpus` asks Ray for 1 CPU per replica.
Every deployment here defaults to 0.1 CPU so the app fits on a small machine
even when the Serve config does not mention a deployment (Router,
create_order, DAGDriver).
"""

from typing import Any, Dict

from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.requests import Request
from starlette.responses import JSONResponse

SMALL = {"num_cpus": 0.1}


@serve.deployment(ray_actor_options=SMALL)
class Adder:
    def __init__(self) -> None:
        self.increment = 2

    def reconfigure(self, config: Dict[str, Any]) -> None:
        self.increment = config.get("increment", 2)

    def apply(self, n: float) -> float:
        return n + self.increment


@serve.deployment(ray_actor_options=SMALL)
class Multiplier:
    def __init__(self) -> None:
        self.factor = 3

    def reconfigure(self, config: Dict[str, Any]) -> None:
        self.factor = config.get("factor", 3)

    def apply(self, n: float) -> float:
        return n * self.factor


@serve.deployment(ray_actor_options=SMALL)
class Router:
    """Sends N to Adder or Multiplier depending on OP."""

    def __init__(self, adder: DeploymentHandle, multiplier: DeploymentHandle) -> None:
        self.ops = {"ADD": adder, "MUL": multiplier}

    async def route(self, op: str, n: float) -> float:
        target = self.ops.get(str(op).upper())
        if target is None:
            raise ValueError(f"unknown operation {op!r}, expected ADD or MUL")
        return await target.apply.remote(n)


@serve.deployment(ray_actor_options=SMALL)
def create_order(amount: float) -> str:
    return f"{amount} pizzas please!"


@serve.deployment(ray_actor_options=SMALL)
class DAGDriver:
    """HTTP ingress: parses [OP, N], computes, then formats the order."""

    def __init__(self, router: DeploymentHandle, order: DeploymentHandle) -> None:
        self.router = router
        self.order = order

    async def __call__(self, request: Request) -> JSONResponse:
        try:
            op, n = await request.json()
            n = float(n) if isinstance(n, float) else int(n)
        except Exception:
            return JSONResponse(
                {"error": 'expected a JSON array like ["MUL", 3]'}, status_code=400
            )
        if str(op).upper() not in ("ADD", "MUL"):
            return JSONResponse(
                {"error": f"unknown operation {op!r}, expected ADD or MUL"},
                status_code=400,
            )
        result = await self.router.route.remote(op, n)
        return JSONResponse(await self.order.remote(result))


serve_dag = DAGDriver.bind(Router.bind(Adder.bind(), Multiplier.bind()), create_order.bind())

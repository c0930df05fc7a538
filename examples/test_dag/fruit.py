"""Fruit market demo app for Ray Serve (Ray 2.x API).

HTTP: POST /fruit with a JSON array [FRUIT, AMOUNT], e.g. ["MANGO", 2].
The answer is a JSON number: price * AMOUNT, or -1 for an unknown fruit.

Each stand reads its price from `user_config` (key "price") through
`reconfigure`, so a config change updates prices without a redeploy.

CPU note: a deployment with no `num_cpus` asks Ray for 1 CPU per replica.
Every deployment here defaults to 0.1 CPU so the whole app fits on a small
machine even when the Serve config does not mention a deployment
(for example DAGDriver).
"""

from typing import Any, Dict

from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.requests import Request
from starlette.responses import JSONResponse

SMALL = {"num_cpus": 0.1}


class _Stand:
    """Shared logic of the fruit stands: a price set by user_config."""

    default_price = 0

    def __init__(self) -> None:
        self.price = self.default_price

    def reconfigure(self, config: Dict[str, Any]) -> None:
        self.price = config.get("price", self.default_price)

    def check_price(self, amount: float) -> float:
        return self.price * amount


@serve.deployment(ray_actor_options=SMALL)
class MangoStand(_Stand):
    default_price = 3


@serve.deployment(ray_actor_options=SMALL)
class OrangeStand(_Stand):
    default_price = 2


@serve.deployment(ray_actor_options=SMALL)
class PearStand(_Stand):
    default_price = 1


@serve.deployment(ray_actor_options=SMALL)
class FruitMarket:
    """Asks the right stand for the price of an order."""

    def __init__(
        self,
        mango: DeploymentHandle,
        orange: DeploymentHandle,
        pear: DeploymentHandle,
    ) -> None:
        self.stands = {"MANGO": mango, "ORANGE": orange, "PEAR": pear}

    async def check_price(self, fruit: str, amount: float) -> float:
        stand = self.stands.get(str(fruit).upper())
        if stand is None:
            return -1
        return await stand.check_price.remote(amount)


@serve.deployment(ray_actor_options=SMALL)
class DAGDriver:
    """HTTP ingress: parses [FRUIT, AMOUNT] and asks the market."""

    def __init__(self, market: DeploymentHandle) -> None:
        self.market = market

    async def __call__(self, request: Request) -> JSONResponse:
        try:
            fruit, amount = await request.json()
            amount = float(amount) if isinstance(amount, float) else int(amount)
        except Exception:
            return JSONResponse(
                {"error": 'expected a JSON array like ["MANGO", 2]'}, status_code=400
            )
        price = await self.market.check_price.remote(fruit, amount)
        return JSONResponse(price)


deployment_graph = DAGDriver.bind(
    FruitMarket.bind(MangoStand.bind(), OrangeStand.bind(), PearStand.bind())
)

"""A FastAPI application for the ASGI worker classes (Gunicorn's `-k asgi`, uvicorn's workers): the routes of app.py.

Routes: `/` answers at once; `/sleep/S` awaits S seconds (a request in flight that holds no CPU); `/error` raises
inside the handler; `/status/CODE` answers CODE for any method; any other path answers 404. `failing_app` fails its
lifespan startup, as an application that cannot reach its database does; `failing_shutdown_app` serves the same routes
and fails its lifespan shutdown. It runs only in the virtualenv with tests.gunicorn_env.WORKER_PACKAGES.
"""

import asyncio
import contextlib

from fastapi import APIRouter, FastAPI, Response

routes = APIRouter()


@routes.get('/')
async def root():
    return Response('ok\n', media_type='text/plain')


@routes.get('/sleep/{seconds}')
async def sleep(seconds: float):
    await asyncio.sleep(seconds)
    return Response('slept\n', media_type='text/plain')


@routes.get('/error')
async def error():
    raise RuntimeError('boom from the test application')


@routes.api_route('/status/{code}', methods=['GET', 'POST', 'PUT', 'DELETE', 'PATCH', 'HEAD', 'OPTIONS'])
async def status(code: int):
    return Response('%d\n' % code, status_code=code, media_type='text/plain')


@contextlib.asynccontextmanager
async def _refuse_to_start(_app):
    raise RuntimeError('the application could not reach its database')
    yield  # pragma: no cover


@contextlib.asynccontextmanager
async def _fail_at_shutdown(_app):
    yield
    raise RuntimeError('the application could not flush its queue')


app = FastAPI()
app.include_router(routes)
failing_app = FastAPI(lifespan=_refuse_to_start)
failing_shutdown_app = FastAPI(lifespan=_fail_at_shutdown)
failing_shutdown_app.include_router(routes)

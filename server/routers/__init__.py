"""Route modules, each exposing `router = fastapi.APIRouter()`; create_app includes them."""

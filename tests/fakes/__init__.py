"""In-process fakes of the provider HTTP APIs, as ``httpx.MockTransport`` handlers.

Each implements its provider's documented contract (docs/providers.md): auth, limits, error
shapes, and what every recipient would receive. ``make_messages`` builds rendered
batches and ``assert_each_got_own`` checks a fake's deliveries against them.
"""

from tests.fakes.base import Delivered, FakeApi, Fault
from tests.fakes.http_api import FakeHttpApi
from tests.fakes.mailgun import FakeMailgun
from tests.fakes.messages import assert_each_got_own, make_messages, send_batch
from tests.fakes.postmark import FakePostmark
from tests.fakes.resend import FakeResend
from tests.fakes.sendgrid import FakeSendgrid
from tests.fakes.ses import FakeSes

__all__ = [
    "Delivered",
    "FakeApi",
    "FakeHttpApi",
    "FakeMailgun",
    "FakePostmark",
    "FakeResend",
    "FakeSendgrid",
    "FakeSes",
    "Fault",
    "assert_each_got_own",
    "make_messages",
    "send_batch",
]

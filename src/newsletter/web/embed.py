"""The sign-up form an operator pastes into another website (SPEC section 13, "Embedding").

A plain HTML form that posts to this service's public URL, so that it works without JavaScript (the person
lands on our confirmation page), and a small inline script that, where it runs, posts the same fields as JSON
cross-origin and shows the answer in place. The script's request succeeds only from an origin listed in
NEWSLETTER_ALLOWED_ORIGINS (web/cors.py); from any other, the browser stops it and the script says where to
sign up instead. With the proof-of-work challenge on (NEWSLETTER_SIGNUP_CHALLENGE=pow), the script fetches a
challenge (cross-origin too) and solves it before it sends, as the sign-up page's script does.
"""

from __future__ import annotations

from urllib.parse import urlencode

from newsletter.templating import environment


def signup_snippet(base_url: str, list_slug: str, list_name: str, *, challenge: bool = False) -> str:
    template = environment().get_template("embed/signup_form.html")
    return template.render(
        action=f"{base_url}/subscriptions",
        page=f"{base_url}/?{urlencode({'list': list_slug})}",
        slug=list_slug,
        name=list_name,
        challenge_url=f"{base_url}/subscriptions/challenge" if challenge else None,
    )

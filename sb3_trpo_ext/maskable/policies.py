"""Policies of :class:`~sb3_trpo_ext.MaskableTRPO`: sb3-contrib's maskable actor-critic policies, with separate
actor and critic feature extractors by default (sb3-contrib's classes share one), so the critic's regression can
never move the actor; every change of the actor passes the trust-region check. Their own ``load`` (a file written by
``policy.save``) runs no code from the file (:class:`~sb3_trpo_ext.trpo.policies.SafeLoadMixin`)."""

from __future__ import annotations

from sb3_contrib.common.maskable.policies import (
    MaskableActorCriticCnnPolicy,
    MaskableActorCriticPolicy,
    MaskableMultiInputActorCriticPolicy,
)

from sb3_trpo_ext.trpo.policies import SafeLoadMixin, SeparateExtractorsByDefault

__all__ = ["MaskableCnnPolicy", "MaskableMlpPolicy", "MaskableMultiInputPolicy"]


class MaskableMlpPolicy(SafeLoadMixin, SeparateExtractorsByDefault, MaskableActorCriticPolicy):
    """sb3-contrib's ``MaskableActorCriticPolicy`` with separate actor and critic feature extractors by default."""


class MaskableCnnPolicy(SafeLoadMixin, SeparateExtractorsByDefault, MaskableActorCriticCnnPolicy):
    """sb3-contrib's ``MaskableActorCriticCnnPolicy`` with separate actor and critic feature extractors by default."""


class MaskableMultiInputPolicy(SafeLoadMixin, SeparateExtractorsByDefault, MaskableMultiInputActorCriticPolicy):
    """sb3-contrib's ``MaskableMultiInputActorCriticPolicy`` with separate actor and critic feature extractors by
    default."""

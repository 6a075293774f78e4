"""dltrain's fused launcher (Hydra builds launchers only from the `hydra_plugins` namespace):
`fused_launcher.FusedLauncher` for `+launcher=fused`."""

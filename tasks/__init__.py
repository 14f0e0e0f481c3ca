"""The platform's stages, one subpackage each: plain logic plus one prefect_tasks module."""

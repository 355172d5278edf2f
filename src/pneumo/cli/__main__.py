from pneumo.cli import app

app()

"""The manual's two database views, with sqlite3's ``?`` placeholders and tuple parameters."""

from flask import request

from kiln import app, config, database


@app.route("/user/create", methods=["POST"])
def user_create():
    with database.write as db:
        cur = db.cursor()
        cur.execute("INSERT INTO users(email) VALUES(?)", (request.form["email"],))
        cur.close()
        db.commit()
    return {"id": cur.lastrowid}, 201


@app.route("/user/<int:userid>", methods=["GET"])
def user_show(userid):
    with database.read as db:
        cur = db.cursor()
        cur.execute("SELECT email FROM users WHERE id=?", (userid,))
        result = cur.fetchone()
        cur.close()
    if result is None:
        return {"error": "not found"}, 404
    return {"email": result[0]}


@app.route("/toast", methods=["GET"])
def toast():
    return {"one_sided": config.get("toast.one_sided"), "two_sided": config.get("toast.two_sided")}


@app.route("/whoami", methods=["GET"])
def whoami():
    auth = request.authorization
    return {"user": auth.username if auth else None}
